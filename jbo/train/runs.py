"""A run folder: its config, starting over (``resume=False``) and checking that a checkpoint
belongs to the run that is loading or resuming it."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import IO

from jbo.train.config import TrainConfig

__all__ = ["run_meta", "check_resumable", "prepare_out_dir", "check_belongs", "config_diff",
           "lock_run_dir", "RunFolderBusy", "LOCK_NAME"]

LOCK_NAME = ".jbo-train.lock"  # in the run folder; holds the pid of the run writing there


class RunFolderBusy(ValueError):
    """Another training run holds the run folder's lock."""


def lock_run_dir(out_dir: str | Path) -> IO | None:
    """Take ``out_dir``'s lock for this process (created if needed) and return the open lock
    file: the lock lasts until it is closed or the process ends (also by a crash or kill).

    Raises :class:`RunFolderBusy` naming the folder and the other run's pid when another
    process holds it: two runs into one folder would interleave checkpoints and CSV rows.
    None where ``fcntl`` does not exist (Windows: no lock).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / LOCK_NAME, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held by another process
        fh.seek(0)
        pid = fh.read().strip() or "unknown"
        fh.close()
        raise RunFolderBusy(f"run folder {out} is in use by another training run (pid {pid}); "
                            "wait for it to finish or pass another --out") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


# settings that may change between a run and its resumption (budgets, I/O, schedules of
# side effects): everything else must match the checkpoint
RESUME_IGNORED = {"epochs", "max_steps", "max_seconds", "progress", "resume", "out_dir",
                  "tensorboard", "checkpoint_every", "checkpoint_seconds", "keep_checkpoints",
                  "patience", "min_improvement", "log_every"}


def run_meta(config: TrainConfig, base: dict[int, float], scale: float, n_batches: int,
             hypers: dict | None = None) -> dict:
    """The JSON stored beside every checkpoint's state; ``hypers``: the resolved model
    hyperparameters (with the data constants), default ``config.hypers``."""
    return {"format": 2, "config": config.to_dict(), "model": config.model,
            "hypers": config.hypers if hypers is None else hypers, "dtype": config.dtype, "scale": scale,
            "baseline": {str(z): c for z, c in base.items()}, "n_batches": n_batches}


def _norm(x):
    return json.loads(json.dumps(x))


def config_diff(saved: dict, now: dict, ignored=RESUME_IGNORED) -> list[str]:
    """Names of the settings (outside ``ignored``) on which two config dicts differ; a
    setting one of them lacks (written before it existed) counts as its default."""
    default = TrainConfig().to_dict()
    return sorted(k for k in set(now) | set(saved) if k not in ignored
                  and _norm(saved.get(k, default.get(k))) != _norm(now.get(k, default.get(k))))


def check_resumable(saved: dict, config: TrainConfig) -> None:
    diff = config_diff(saved, config.to_dict())
    if diff:
        raise ValueError(f"cannot resume from {config.out_dir}: the checkpoint was trained with "
                         f"different {diff}; use another out_dir or resume=False")


def prepare_out_dir(config: TrainConfig) -> None:
    """Create ``out_dir``; with ``resume=False`` move an earlier run's checkpoints aside (to
    ``checkpoints.replaced-<time>``, with a warning) so they can never be loaded as this run's;
    write ``config.json`` (what :func:`check_belongs` compares checkpoints with)."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoints"
    if not config.resume and ckpt.is_dir() and any(ckpt.iterdir()):
        aside = out / f"checkpoints.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        i = 1
        while aside.exists():
            aside, i = aside.with_name(f"{aside.name.split('~')[0]}~{i}"), i + 1
        ckpt.rename(aside)
        warnings.warn(f"resume=False: moved the earlier checkpoints of {out} to {aside} "
                      "(delete that folder when you no longer need it)", UserWarning,
                      stacklevel=3)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1, sort_keys=True))


def check_belongs(run_dir: Path, saved_config: dict, step: int) -> None:
    """Raise ValueError when ``run_dir/config.json`` (the run's own config) differs from the
    config stored with the checkpoint of ``step`` (a stale checkpoint of an earlier run)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return
    diff = config_diff(saved_config, json.loads(path.read_text()))
    if diff:
        raise ValueError(f"checkpoint step {step} in {run_dir}/checkpoints was written by another "
                         f"run (config differs in {diff}); retrain with --no-resume or delete "
                         "the stale step folders")
