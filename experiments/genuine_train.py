"""Genuine models (issue 23): the converged study's split exported for each trainer, and the
trainers run (metatrain ``mtt train`` for PET / SOAP-BPNN, mace-torch ``mace_run_train``).

A run folder ``RUNS/<regime>/<model>/`` holds ``train/valid/test.extxyz`` (energies eV in
``info["REF_energy"]``, forces eV/Å in ``arrays["REF_forces"]``), ``split.json`` (the cluster
names of each part), the trainer's input (``options.yaml`` / ``mace.args``, made from the
committed templates in ``experiments/genuine_inputs/`` with the isolated-H energy filled in),
and the trainer's own output. The exported model is copied to ``results/genuine/<regime>/``.
A makeup other than ``full`` (the converged study's ``jbo.train.dataset.select_makeup``: e.g.
``up_to:4+atoms`` adds the 1-4-atom subclusters of the training parents) changes the training
part only, and the folder: ``<model>-<makeup made path-safe>`` (:func:`cell_name`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from jbo.study.regimes import RegimeData, test_records, training_rows

__all__ = ["MODELS", "INPUTS", "isolated_h", "cell_name", "split_of", "export_split", "prepare",
           "train"]

INPUTS = Path(__file__).with_name("genuine_inputs")
MODELS = ("pet", "mace", "soap_bpnn")
#: the converged study's defaults, seed 0 (experiments/converged.py); the makeup is an argument
SPLIT = dict(val_fraction=0.1, split_seed=0, n_train=None, seed=0)
BIN = Path(sys.executable).parent


def isolated_h(data: RegimeData) -> float:
    """Energy (eV) of the isolated H atom: every 1-atom subcluster of the data (all equal)."""
    e = {float(r.energy) for g in data.regimes for r in data.records[g] if r.n_atoms == 1}
    if not e:
        raise ValueError(f"{data.db} holds no 1-atom subcluster to take the isolated H from")
    if max(e) - min(e) > 1e-8:
        raise ValueError(f"1-atom subclusters disagree ({min(e)} .. {max(e)} eV)")
    return float(np.mean(sorted(e)))


def cell_name(model: str, makeup: str = "full") -> str:
    """Folder of a (model, makeup) under ``<regime>/``: ``model`` for ``full``, else
    ``model-<makeup>`` with ':' dropped and '+' as '_' (``up_to:4+atoms`` -> ``up_to4_atoms``).
    Raises ValueError for an unknown model or makeup."""
    from jbo.train.config import parse_makeup

    if model not in MODELS:
        raise ValueError(f"unknown genuine model {model!r}: one of {', '.join(MODELS)}")
    parse_makeup(makeup)  # one clear error for a makeup jbo does not know
    key = "".join(makeup.split())
    return model if key == "full" else f"{model}-{key.replace(':', '').replace('+', '_')}"


def split_of(data: RegimeData, regime: str, makeup: str = "full") -> dict[str, list]:
    """Records of the converged study's train (the makeup's rows of the training parents) /
    validation (full clusters) / test (full clusters of the test parents) parts."""
    rows, val, _, _ = training_rows(data, regime, makeup, SPLIT["val_fraction"],
                                    SPLIT["split_seed"], SPLIT["n_train"], SPLIT["seed"])
    return dict(train=rows, valid=val, test=test_records(data, regime, None)["test"])


def _write(records: list, path: Path) -> None:
    from ase import Atoms
    from ase.io import write

    frames = []
    for r in records:
        at = Atoms(numbers=r.species, positions=r.positions, pbc=False)
        at.info.update(REF_energy=float(r.energy), cluster=r.cluster, subset=int(r.subset))
        at.arrays["REF_forces"] = np.asarray(r.forces, np.float64)
        frames.append(at)
    write(str(path), frames, format="extxyz")


def export_split(data: RegimeData, regime: str, folder: Path, makeup: str = "full"
                 ) -> dict[str, list[str]]:
    """Write ``folder/{train,valid,test}.extxyz`` and ``split.json``; return the cluster names
    of each part (a parent repeats in ``train`` once per subcluster row of the makeup)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = split_of(data, regime, makeup)
    names = {k: [r.cluster for r in v] for k, v in parts.items()}
    for k, v in parts.items():
        if any(r.forces is None for r in v):
            raise ValueError(f"{regime}/{k}: a record without forces; relabel the data")
        _write(v, folder / f"{k}.extxyz")
    (folder / "split.json").write_text(json.dumps(names))
    return names


def _set_epochs(text: str, model: str, epochs: int) -> str:
    """The trainer input with its epoch count replaced (comments kept; metatrain: also a
    checkpoint every epoch, so a wall-cut run of few long epochs keeps its newest one)."""
    import re

    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    subs = ([(r"^--max_num_epochs=\d+", f"--max_num_epochs={epochs}")] if model == "mace" else
            [(r"^(\s*num_epochs:\s*)\d+", rf"\g<1>{epochs}"),
             (r"^(\s*checkpoint_interval:\s*)\d+", r"\g<1>1")])
    for pattern, new in subs:
        text, n = re.subn(pattern, new, text, count=1, flags=re.M)
        if n != 1:
            raise ValueError(f"{model} input template: no line matching {pattern!r}")
    return text


def prepare(data: RegimeData, regime: str, model: str, folder: Path, makeup: str = "full",
            epochs: int | None = None) -> Path:
    """Export the split (``makeup``'s training rows) and write the trainer input into
    ``folder`` (``epochs``: instead of the template's); returns the input."""
    export_split(data, regime, folder, makeup)
    e_h = repr(isolated_h(data))
    if model == "mace":
        src, dst = INPUTS / "mace.args", folder / "mace.args"
    else:
        src, dst = INPUTS / f"{model}.yaml", folder / "options.yaml"
    text = src.read_text().replace("ISOLATED_H", e_h)
    dst.write_text(text if epochs is None else _set_epochs(text, model, epochs))
    return dst


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               TORCH_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def _command(model: str, folder: Path) -> list[str]:
    if model == "mace":
        args = [ln.strip() for ln in (folder / "mace.args").read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
        return [str(BIN / "mace_run_train"), *args]
    return [str(BIN / "mtt"), "train", "options.yaml", "-o", "model.pt"]


def _exported(model: str, folder: Path) -> Path | None:
    if model == "mace":
        for name in ("mace_stagetwo.model", "mace.model"):
            if (folder / name).exists():
                return folder / name
        return None
    return folder / "model.pt" if (folder / "model.pt").exists() else None


def _export_latest_checkpoint(folder: Path, since: float = 0.0) -> Path | None:
    """metatrain run cut by the wall budget: export its newest checkpoint (``mtt export``),
    one written at or after ``since`` (epoch s; an earlier run's checkpoints are not this run)."""
    ckpts = sorted((p for p in folder.glob("outputs/**/*.ckpt") if p.stat().st_mtime >= since),
                   key=lambda p: p.stat().st_mtime)
    if not ckpts:
        return None
    subprocess.run([str(BIN / "mtt"), "export", str(ckpts[-1]), "-o", "model.pt"],
                   cwd=folder, env=_env(), check=True, capture_output=True, text=True)
    return folder / "model.pt"


def _finish_mace(folder: Path, log) -> None:
    """MACE run cut by the wall budget: ``--restart_latest`` from its newest checkpoint with
    ``--max_num_epochs`` = that epoch, so mace_run_train only evaluates and saves the model."""
    import re

    ckpts = sorted(folder.glob("checkpoints/*_epoch-*.pt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        return
    epoch = int(re.search(r"_epoch-(\d+)", ckpts[-1].name).group(1))
    subprocess.run(["nice", "-n", "19", *_command("mace", folder),
                    f"--max_num_epochs={epoch}"], cwd=folder, env=_env(), stdout=log,
                   stderr=subprocess.STDOUT, check=True)


def epochs_done(model: str, folder: Path, start: int = 0) -> int:
    """Epochs the trainer logged in ``folder/train.log`` from byte ``start`` on (this run's
    part of the appended log; the last logged epoch + 1; metatrain logs every
    ``log_interval`` epochs)."""
    import re

    with open(folder / "train.log", "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    pattern = r"INFO: Epoch (\d+):" if model == "mace" else r"Epoch:\s+(\d+) \|"
    found = [int(m) for m in re.findall(pattern, text)]
    return max(found) + 1 if found else 0


def train(model: str, folder: Path, dest: Path, wall: float) -> dict:
    """Run the trainer in ``folder`` (nice 19, one thread, at most ``wall`` s), copy the
    exported model to ``dest``; returns the run record (seconds, stop, command)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    cmd = _command(model, folder)
    for name in ("model.pt", "mace.model", "mace_stagetwo.model"):  # an earlier run's export
        (folder / name).unlink(missing_ok=True)  # must not be shipped as this run's (--redo)
    log_path = folder / "train.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    t0 = time.time()
    stop = "trainer finished (its own epoch/patience rule)"
    with open(log_path, "a") as log:
        proc = subprocess.Popen(["nice", "-n", "19", *cmd], cwd=folder, env=_env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=wall)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 15)
            proc.wait()
            rc, stop = 0, f"wall budget {wall:.0f} s reached (newest checkpoint exported)"
            if model == "mace":
                _finish_mace(folder, log)
    seconds = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {rc}); see {folder / 'train.log'}")
    out = _exported(model, folder)
    if out is None and model != "mace":
        out = _export_latest_checkpoint(folder, t0)
    if out is None:
        raise RuntimeError(f"{model}: no exported model in {folder} (see train.log)")
    shutil.copy(out, dest)
    epochs = epochs_done(model, folder, start)
    if model != "mace" and stop.startswith("trainer finished"):  # logs every log_interval
        import yaml  # epochs only: the schedule ran to its end
        epochs = int(yaml.safe_load((folder / "options.yaml").read_text())
                     ["architecture"]["training"]["num_epochs"])
    return dict(seconds=seconds, stop=stop, command=cmd, exported=out.name, epochs=epochs)
