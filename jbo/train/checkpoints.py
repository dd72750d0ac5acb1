"""Orbax checkpoints: keep the last k, and fall back to an older one when the newest is corrupt.

Layout: ``<dir>/<step>/state`` (a pytree: params, optimizer state, step, RNG key, early-stopping
state, ...) and ``<dir>/<step>/meta`` (JSON: config, model name/hypers, baseline, scale).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["CheckpointError", "Checkpoints"]


class CheckpointError(RuntimeError):
    """No usable checkpoint could be restored."""


def _to_host(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: np.asarray(x), tree)


class Checkpoints:
    """Save/restore training state under ``directory``; ``keep`` newest steps are kept."""

    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._set_aside_junk()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "meta"))

    def _set_aside_junk(self) -> None:
        """Move step-named folders that are not checkpoints (no Orbax metadata: an interrupted
        copy, a folder made by hand) to ``<dir>.junk/``, with a warning: left in place, Orbax
        counts them as steps and they would occupy kept slots forever."""
        for d in sorted(self.directory.iterdir()):
            if d.is_dir() and d.name.isdigit() and not (d / "_CHECKPOINT_METADATA").exists():
                junk = self.directory.with_name(self.directory.name + ".junk")
                junk.mkdir(exist_ok=True)
                target = junk / f"{d.name}-{len(list(junk.iterdir()))}"
                d.rename(target)
                warnings.warn(f"{d} is not a checkpoint (no Orbax metadata); moved it to "
                              f"{target}", RuntimeWarning, stacklevel=3)

    def steps(self) -> list[int]:
        """Saved steps, newest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps(), reverse=True)

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Write ``state`` (pytree of arrays) and ``meta`` (JSON-able) at ``step`` (blocking).

        An existing checkpoint at ``step`` (left by a run that was resumed from an older one)
        is replaced."""
        if step in self.steps():
            self._manager.delete(step)
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_host(state)), meta=ocp.args.JsonSave(meta)),
            force=True)
        self._manager.wait_until_finished()

    def restore(self, target: Any | None = None, step: int | None = None
                ) -> tuple[Any, dict[str, Any], int]:
        """Newest readable checkpoint as (state, meta, step).

        ``target`` is a pytree with the structure/dtypes of the saved state (e.g. a freshly
        initialised one); None restores plain nested dicts of numpy arrays. A checkpoint that
        fails to read is reported with a warning naming it, and the previous one is tried.
        Raises :class:`CheckpointError` when none can be read.
        """
        candidates = [step] if step is not None else self.steps()
        if not candidates:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        failures = []
        for s in candidates:
            try:
                state_args = (ocp.args.StandardRestore(_to_host(target)) if target is not None
                              else ocp.args.StandardRestore())
                out = self._manager.restore(s, args=ocp.args.Composite(
                    state=state_args, meta=ocp.args.JsonRestore()))
                return out["state"], dict(out["meta"]), s
            except Exception as err:  # corrupt files raise many types (OSError, ValueError, ...)
                msg = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                failures.append(f"step {s} ({self.directory / str(s)}): {msg}")
                if s != candidates[-1]:
                    warnings.warn(f"checkpoint {self.directory / str(s)} is unreadable ({msg}); "
                                  "falling back to the previous checkpoint", RuntimeWarning,
                                  stacklevel=2)
        raise CheckpointError(
            "no readable checkpoint in " + str(self.directory) + ":\n  " + "\n  ".join(failures)
            + "\nDelete the corrupt step directories (or the whole folder to start over).")

    def close(self) -> None:
        self._manager.close()

