"""The converged protocol of :class:`jbo.study.Cell`: train to convergence (energies + forces),
ship, decompose.

A converged cell is one training run on one density regime (model, makeup, seed,
training-set cap, regularizer). :func:`run_converged`

1. takes the regime's training parents (:func:`jbo.study.regimes.training_rows`), holds
   out ``val_fraction`` of them by parent for validation and trains with the convergence rule
   of :class:`jbo.train.TrainConfig`: a cosine schedule over ``steps`` (rounded up to whole
   epochs), a validation every ``eval_every`` steps, a stop when the validation MAE has not
   improved by ``min_improvement`` (relative) in ``patience`` validations, and a wall-time
   budget ``max_seconds`` (training steps only);
2. saves the best-validation model with :func:`jbo.models.save` as
   ``MODELS/<key>.jbo`` (what ``jbo decompose MODELS/<key>.jbo`` reads);
3. loads that file back and decomposes the test sets with it (every number of the cell comes
   from the shipped model), and stores the per-order energies of the first three test parents
   under ``check`` (a test reloads the file and reproduces them to 1e-6 eV).

Stop kinds (``stop_kind``): ``converged`` (the patience rule fired), ``schedule`` (the cosine
schedule ran to its end: learning rate annealed to ~0; ``plateau`` says how much the best
validation MAE still improved over the last quarter of the validations), ``budget``
(``max_seconds``: not converged; the curve is kept). Energies in eV; MAEs in meV/atom.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from jbo import analysis
from jbo.study.cell import Cell, has_rotate
from jbo.study.fixed import spectra
from jbo.study.regimes import TEST_SETS, RegimeData, test_records, training_rows
from jbo.study.results import StopReason
from jbo.study.store import CellCache

__all__ = ["run_converged", "train_cell", "evaluate_cell", "stop_kind", "plateau"]

#: largest shipped model file (bytes); the zoo defaults take 16-176 kB
MAX_MODEL_BYTES = 1_000_000


def stop_kind(reason: str) -> str:
    """``converged`` | ``schedule`` | ``budget`` of a stop reason (:class:`StopReason`)."""
    return StopReason.parse(reason).kind


def _config(cell: Cell, data: RegimeData, n_rows: int, val_fraction: float):
    import jax

    from jbo.train import RegularizerConfig, TrainConfig
    from jbo.train.config import parse_makeup

    bsz = min(cell.batch_size, n_rows)
    n_batches = math.ceil(n_rows / bsz)
    reg = RegularizerConfig(lam=cell.lam, order=cell.reg_order, mode=cell.reg_mode,
                            batch_size=4) if cell.lam else RegularizerConfig()
    extra = {"rotate": cell.rotate} if has_rotate() else {}
    return TrainConfig(
        db=data.db, model=cell.model, hypers=cell.hypers(), makeup=cell.makeup,
        val_fraction=val_fraction, split_seed=cell.split_seed, seed=cell.seed,
        epochs=max(1, math.ceil(cell.steps / n_batches)), batch_size=bsz, lr=cell.lr,
        schedule=cell.schedule, eval_every=cell.eval_every, patience=cell.patience,
        min_improvement=cell.min_improvement, plateau_patience=cell.plateau_patience,
        max_seconds=cell.max_seconds, max_steps=cell.max_steps,
        force_weight=cell.force_weight, regularizer=reg, ema_decay=cell.ema_decay,
        baseline_from_atoms=parse_makeup(cell.makeup)[1], progress=False, tensorboard=False,
        shard=len(jax.local_devices()) > 1, **extra)


def _device() -> str:
    import jax
    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', '')} x{len(jax.local_devices())}"


def plateau(curve: Sequence[float]) -> float:
    """Relative improvement of the best validation MAE over the last quarter of the
    validations (0: flat; NaN with fewer than 4 validations)."""
    v = np.minimum.accumulate(np.asarray(curve, float))
    if v.size < 4:
        return float("nan")
    q = v[-(v.size // 4) - 1]
    return float((q - v[-1]) / q) if q > 0 else float("nan")


def train_cell(cell: Cell, data: RegimeData, path: Path) -> None:
    """Train ``cell`` and write its best-validation model to ``path``, with the training record
    (rows, stop reason, steps, seconds, device, validation curve) in the file's metadata, so
    that :func:`evaluate_cell` can finish the cell later or on another machine."""
    from jbo import models
    from jbo.train import train

    key = cell.key(data.spec)
    rows, val, val_parents, vf = training_rows(data, cell.regime, cell.makeup,
                                               cell.val_fraction, cell.split_seed,
                                               cell.n_train, cell.seed)
    res = train(_config(cell, data, len(rows), vf), records=rows + val)
    if sorted(res.data.val_parents) != val_parents:  # the split we meant is the split it ran
        raise RuntimeError(f"{key}: training validated on other parents than selected")
    curve = [h["val_mae"] for h in res.history]
    training = dict(
        n_train_rows=len(rows), n_val=len(val), n_train_parents=len({r.cluster for r in rows}),
        stop_reason=res.stop_reason, steps=int(res.state.step), train_seconds=res.seconds,
        device=_device(), rotate_applied=bool(cell.rotate and has_rotate()),
        val_curve=dict(step=[int(h["step"]) for h in res.history], mae=curve,
                       force_mae=[h["val_force_mae"] for h in res.history]))
    path.parent.mkdir(parents=True, exist_ok=True)
    models.save(path, res.model, metadata=dict(key=key, cell=cell.to_json(),
                                               stop_reason=res.stop_reason, training=training))
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size} bytes, over the {MAX_MODEL_BYTES} "
                         "a shipped study model may take (issue 15: <= 20 MB for all of them); "
                         "use smaller hyperparameters for this model")


#: metrics of a shipped model beyond its test-set spectra (cells stored before one existed
#: get it from their model file on the next run)
MODEL_METRICS = ("rotational_error", "train_mae")


def train_mae(shipped, cell: Cell, data: RegimeData) -> float:
    """Total-energy MAE (meV/atom) of ``shipped`` on the full clusters ``cell`` trained on: its
    fit, to read against its validation MAE (close: under-fitting; far below: over-fitting).
    NaN if the cell trained on no full cluster."""
    rows = [r for r in training_rows(data, cell.regime, cell.makeup, cell.val_fraction,
                                     cell.split_seed, cell.n_train, cell.seed)[0] if r.is_full]
    if not rows:
        return float("nan")
    e = analysis.decompose_records(shipped, rows, orders=False, chunk=min(256, len(rows))).totals
    n = np.array([r.n_atoms for r in rows], np.float64)
    return float(1e3 * np.mean(np.abs(e - np.array([r.energy for r in rows])) / n))


def model_metrics(shipped, cell: Cell, data: RegimeData, test: Sequence) -> dict:
    """:data:`MODEL_METRICS` of the shipped model of ``cell`` (``test``: its test parents)."""
    return dict(rotational_error=analysis.learned_rotational_error(shipped, test),
                train_mae=train_mae(shipped, cell, data))


def evaluate_cell(cell: Cell, data: RegimeData, path: Path,
                  max_test: int | None = None, max_heldout: int | None = None) -> dict:
    """The cell's numbers, all from the shipped model at ``path`` (written by
    :func:`train_cell`): per-order energies of the test sets, rotational error, training
    record. Raises if the file was trained for another cell."""
    from jbo import models

    key = cell.key(data.spec)
    shipped = models.load(path)
    meta = shipped.meta["metadata"]
    if meta.get("key") != key or "training" not in meta:
        raise ValueError(f"{path} holds no training record of cell {key} (found key "
                         f"{meta.get('key')!r}): delete it and run the cell again")
    sets = test_records(data, cell.regime, max_test, max_heldout)
    names = [k for k in TEST_SETS if sets[k]]
    joint = analysis.decompose_records(shipped, [r for k in names for r in sets[k]])
    tests, start = {}, 0
    for k in names:
        got = joint.rows(np.arange(start, start + len(sets[k]))).to_json()
        ref = data.ref.take([r.cluster for r in sets[k]]).to_json()
        tests[k] = {**got, "ref_total": ref["total"], "ref_per_order": ref["per_order"]}
        start += len(sets[k])
    t, tr = tests["test"], meta["training"]
    curve = tr["val_curve"]["mae"]
    return dict(
        cell=cell.to_json(), key=key, model_path=f"models/{path.name}",
        model_bytes=path.stat().st_size, hypers=shipped.meta["hypers"],
        **tr, stop_kind=stop_kind(tr["stop_reason"]),  # the training record (train_cell)
        stop=StopReason.parse(tr["stop_reason"]).to_json(),  # the reason's kind and numbers
        best_val_mae=float(np.nanmin(curve)) if curve else float("nan"),
        plateau=plateau(curve),
        **model_metrics(shipped, cell, data, sets["test"]),
        check=dict(cluster=t["cluster"][:3], total=t["total"][:3], per_order=t["per_order"][:3]),
        tests=tests)


def run_converged(cell: Cell, data: RegimeData, cache: CellCache,
                  models_dir: str | Path, max_test: int | None = None,
                  max_heldout: int | None = None, log=print,
                  train_only: bool = False) -> dict | None:
    """Train, ship and decompose ``cell``, or load it from ``cache`` (with its model file).

    A model file without a cached cell (trained elsewhere with ``train_only``, e.g. on a GPU)
    is evaluated without training again; ``train_only`` trains and ships, returning None."""
    from jbo import models

    key = cell.key(data.spec)
    path = Path(models_dir) / f"{key}.jbo"
    hit = cache.get(key)
    if hit is not None and path.exists():
        if any(k not in hit for k in MODEL_METRICS):  # cells run before a metric existed
            hit.update(model_metrics(models.load(path), cell, data,
                                     test_records(data, cell.regime, max_test)["test"]))
            cache.put(key, hit)
        return {**hit, "cached": True}
    t0 = time.perf_counter()
    trained_here = not path.exists()
    if trained_here:
        train_cell(cell, data, path)
    if train_only:
        log(f"[{key}] trained: {path}" if trained_here else f"[{key}] already trained: {path}")
        return None
    out = evaluate_cell(cell, data, path, max_test, max_heldout)
    out["seconds"] = time.perf_counter() - t0  # work done here (evaluation only if trained
    #                                            elsewhere: see train_seconds and device)
    cache.put(key, out)
    log(f"[{key}] {out['seconds']:.0f} s ({out['steps']} steps, {out['stop_kind']}, "
        f"{out['device']}), best val {out['best_val_mae']:.1f}, test MAE "
        f"{analysis.total_mae(*spectra(out['tests']['test'])):.1f} meV/atom, "
        f"{out['model_bytes']} B")
    return {**out, "cached": False}

