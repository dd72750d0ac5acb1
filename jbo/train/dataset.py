"""The training data of a run: records -> makeup, split, composition baseline and scale.

Selects the *dataset makeup* (full clusters only, plus subclusters up to m atoms, plus isolated
atoms) by the popcount of each record's ``subset`` bitmask, splits the ``split="train"`` parents
into training / validation **by parent cluster** (subclusters of a validation cluster never leak
into training) and fits the composition baseline; the loop pads the records into a
:class:`jbo.data.batch.Batch` (:func:`jbo.data.batch.pad_records`). Records come from the one
reader, :func:`jbo.data.records.read_records`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from jbo.data.records import Record, read_records
from jbo.train.config import TrainConfig, parse_makeup

__all__ = ["Datasets", "prepare", "normalization", "select_makeup", "split_by_cluster",
           "fit_composition_baseline", "isolated_atom_baseline", "batch_indices"]


def select_makeup(records: Sequence[Record], makeup: str) -> list[Record]:
    """Rows of ``records`` that the dataset makeup keeps (see :func:`parse_makeup`)."""
    size, atoms, everything = parse_makeup(makeup)
    out = []
    for r in records:
        k = bin(r.subset).count("1")
        if everything or r.is_full or (2 <= k <= size) or (atoms and k == 1):
            out.append(r)
    return out


def _cluster_rank(cluster: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{cluster}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2.0**64


def split_by_cluster(records: Sequence[Record], val_fraction: float, seed: int = 0
                     ) -> tuple[set[str], set[str]]:
    """Deterministic (train, validation) sets of parent-cluster ids among ``split="train"`` rows.

    Clusters are ranked by a seeded hash of their id (stable when rows are added), and the
    lowest ``round(val_fraction * n)`` (at least 1 when ``val_fraction > 0`` and n >= 2) go to
    validation. Every subcluster row follows its parent.
    """
    clusters = sorted({r.cluster for r in records if r.split == "train"})
    if not clusters:
        raise ValueError("no split='train' rows: the dataset needs training parents")
    ranked = sorted(clusters, key=lambda c: _cluster_rank(c, seed))
    n_val = int(round(val_fraction * len(ranked)))
    if val_fraction > 0 and len(ranked) >= 2:
        n_val = min(max(n_val, 1), len(ranked) - 1)
    return set(ranked[n_val:]), set(ranked[:n_val])


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
    records = read_records(config.db) if records is None else records
    if not records:
        raise ValueError(f"{config.db} holds no status='ok' rows")
    seen: set[tuple[str, int]] = set()
    for r in records:
        if (r.cluster, r.subset) in seen:
            raise ValueError(f"{config.db} labels {r.cluster} subset {r.subset} more than once "
                             "(several methods or bases?); select one, e.g. "
                             "read_records(db, method='fci') and pass records=")
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
    if not val and (config.patience is not None or config.plateau_patience is not None):
        raise ValueError("patience and plateau_patience act on the validation MAE, but there is "
                         f"no validation data (val_fraction={config.val_fraction:g}, "
                         f"{len(train_ids)} training parents); pass --val-fraction > 0 (e.g. "
                         "0.2) with at least 2 training parents, or drop --patience/"
                         "--plateau-patience")
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


def fit_composition_baseline(records: Sequence[Record], ridge: float = 1e-10
                             ) -> dict[int, float]:
    """Least-squares energy per element, E ≈ Σ_Z c_Z n_Z (eV per atom of element Z).

    A pure one-body term: it moves only the order-1 part of any body-order decomposition.
    """
    zs = sorted({int(z) for r in records for z in r.species})
    counts = np.array([[np.sum(r.species == z) for z in zs] for r in records], float)
    energy = np.array([r.energy for r in records])
    a = counts.T @ counts + ridge * np.eye(len(zs))
    coef = np.linalg.solve(a, counts.T @ energy)
    return {z: float(c) for z, c in zip(zs, coef)}


def isolated_atom_baseline(records: Sequence[Record]) -> dict[int, float]:
    """Energy per element (eV) read off the isolated-atom rows (mean over them, which are
    identical for a size-consistent reference). Raises ValueError for an element without one."""
    zs = sorted({int(z) for r in records for z in r.species})
    atoms: dict[int, list[float]] = {}
    for r in records:
        if r.n_atoms == 1:
            atoms.setdefault(int(r.species[0]), []).append(r.energy)
    missing = [z for z in zs if z not in atoms]
    if missing:
        raise ValueError(
            f"baseline_from_atoms needs isolated-atom rows for elements {missing} in the training "
            "set; use a makeup with '+atoms' (e.g. 'up_to:4+atoms') or 'all'"
        )
    return {z: float(np.mean(atoms[z])) for z in zs}


def batch_indices(n: int, batch_size: int, key_seed: int, epoch: int, shuffle: bool = True
                  ) -> list[np.ndarray]:
    """Index arrays of one epoch; the permutation depends only on (key_seed, epoch).

    The last batch may be short (callers pad it with zero-weight rows), so every structure is
    seen exactly once per epoch.
    """
    order = (np.random.default_rng([key_seed, epoch]).permutation(n) if shuffle
             else np.arange(n))
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]
