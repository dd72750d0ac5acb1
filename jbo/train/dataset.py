"""The datasets of a training run: train (makeup-selected), validation, regularizer, test."""

from __future__ import annotations

import dataclasses

import numpy as np

from jbo.data.batches import (Record, fit_composition_baseline, isolated_atom_baseline,
                              pad_records, read_db,
                              select_makeup, split_by_cluster)
from jbo.train.config import TrainConfig

__all__ = ["Datasets", "prepare", "normalization"]


@dataclasses.dataclass
class Datasets:
    """train: labelled rows of the makeup from training parents. val: full clusters of the
    validation parents. reg: full training clusters with more than K atoms (geometry only, for
    the regularizer). test: ``split="heldout"`` full clusters. ``val_parents``: their ids."""

    train: list[Record]
    val: list[Record]
    reg: list[Record]
    test: list[Record]
    val_parents: list[str]
    train_parents: list[str]


def prepare(config: TrainConfig, records: list[Record] | None = None) -> Datasets:
    """Read ``config.db`` (unless ``records`` is given) and split it (see :class:`Datasets`)."""
    records = read_db(config.db) if records is None else records
    if not records:
        raise ValueError(f"{config.db} holds no status='ok' rows")
    seen: set[tuple[str, int]] = set()
    for r in records:
        if (r.cluster, r.subset) in seen:
            raise ValueError(f"{config.db} labels {r.cluster} subset {r.subset} more than once "
                             "(several methods or bases?); select one, e.g. "
                             "read_db(db, method='fci') and pass records=")
        seen.add((r.cluster, r.subset))
    train_ids, val_ids = split_by_cluster(records, config.val_fraction, config.split_seed)
    pool = [r for r in records if r.split == "train"]
    train = select_makeup([r for r in pool if r.cluster in train_ids], config.makeup)
    val = [r for r in pool if r.cluster in val_ids and r.is_full]
    reg = [r for r in pool if r.cluster in train_ids and r.is_full
           and r.n_atoms > config.regularizer.order]
    test = [r for r in records if r.split == "heldout" and r.is_full]
    if not train:
        raise ValueError(f"makeup {config.makeup!r} selects no training rows from {config.db}")
    if config.regularizer.lam > 0 and not reg:
        raise ValueError("the regularizer needs training clusters with more than "
                         f"K={config.regularizer.order} atoms; none found")
    return Datasets(train, val, reg, test, sorted(val_ids), sorted(train_ids))


def normalization(config: TrainConfig, train: list[Record]) -> tuple[dict[int, float], float]:
    """(composition baseline eV/atom per element, scale s in eV) from the training rows.

    s is the std of the per-atom residual energies (E − baseline)/n (1 when normalisation is
    off or the residuals are constant).
    """
    zs = sorted({int(z) for r in train for z in r.species})
    if not config.baseline:
        base = {z: 0.0 for z in zs}
    elif config.baseline_from_atoms:
        base = isolated_atom_baseline(train)
    else:
        base = fit_composition_baseline(train)
    res = np.array([(r.energy - sum(base[int(z)] for z in r.species)) / r.n_atoms
                    for r in train])
    scale = float(res.std()) if config.normalize else 1.0
    if not np.isfinite(scale) or scale < 1e-8:
        scale = 1.0
    return base, scale


def baseline_array(base: dict[int, float], z_max: int = 118) -> np.ndarray:
    """``[z_max+1]`` eV per atom indexed by atomic number (0 for absent elements)."""
    arr = np.zeros(z_max + 1)
    for z, c in base.items():
        arr[int(z)] = c
    return arr


def padded(records: list[Record], size: int, n_max: int | None = None) -> dict[str, np.ndarray]:
    """:func:`jbo.data.batches.pad_records` as a dict (the step's input)."""
    return pad_records(records, n_max=n_max, size=size).as_dict()
