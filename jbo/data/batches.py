"""ase.db rows -> padded numpy batches for training (I/O at the edge, numpy out).

Reads the reference database described in ``docs/CONTRACTS.md`` (rows with ``status="ok"``),
selects the *dataset makeup* (full clusters only, plus subclusters up to m atoms, plus isolated
atoms) by the popcount of each row's ``subset`` bitmask, splits the ``split="train"`` parents into
training / validation **by parent cluster** (so subclusters of a validation cluster never leak
into training), and pads structures into rectangular arrays:

    positions [B, Nmax, 3] (Å)   species [B, Nmax] int32   mask [B, Nmax] bool
    energy [B] (eV)              forces [B, Nmax, 3] (eV/Å)  has_forces [B] bool
    weight [B] (0 for padding rows added to fill a fixed batch size)
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jbo.data.records import Record, read_records

__all__ = [
    "Record", "Batch", "read_db", "parse_makeup", "select_makeup", "split_by_cluster",
    "pad_records", "fit_composition_baseline", "batch_indices",
]


@dataclasses.dataclass
class Batch:
    """Padded arrays for a list of structures (see module docstring for shapes/units)."""

    positions: np.ndarray
    species: np.ndarray
    mask: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    has_forces: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return int(self.energy.shape[0])

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def read_db(path: str | Path, **select) -> list[Record]:
    """Every labelled structure of a dataset (compact ``.npz``, ase.db file or URL) as Records;
    ``select`` filters as in :func:`jbo.data.records.read_parents` (e.g. ``split="train"``)."""
    return read_records(path, **select)


_MAKEUP_HELP = ("makeup must be 'full', 'all', or 'up_to:M' (M >= 2), optionally followed by "
                "'+atoms', e.g. 'full', 'up_to:3', 'full+atoms', 'up_to:2+atoms'")


def parse_makeup(makeup: str) -> tuple[int, bool, bool]:
    """``makeup`` -> (max subcluster size m (0 = none), include isolated atoms, everything).

    ``full``: full clusters only. ``up_to:m``: full clusters plus subclusters of 2..m atoms.
    ``+atoms``: also the 1-atom subsets. ``all``: every labelled row.
    """
    m = re.fullmatch(r"\s*(full|all|up_to:(\d+))\s*(\+\s*atoms)?\s*", makeup)
    if m is None:
        raise ValueError(f"unknown dataset makeup {makeup!r}: {_MAKEUP_HELP}")
    if m.group(1) == "all":
        return 0, True, True
    size = int(m.group(2)) if m.group(2) else 0
    if m.group(2) and size < 2:
        raise ValueError(f"makeup {makeup!r}: M must be >= 2 ({_MAKEUP_HELP})")
    return size, m.group(3) is not None, False


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


def pad_records(records: Sequence[Record], n_max: int | None = None,
                size: int | None = None) -> Batch:
    """Pad ``records`` to ``[size, n_max]`` arrays. Rows beyond ``len(records)`` repeat the first
    record with ``weight=0`` (real geometry keeps every model finite on padding rows)."""
    if not records:
        raise ValueError("cannot pad an empty list of records")
    n_max = n_max or max(r.n_atoms for r in records)
    size = size or len(records)
    if size < len(records):
        raise ValueError(f"size={size} is smaller than the number of records {len(records)}")
    if any(r.n_atoms > n_max for r in records):
        raise ValueError(f"a record has more than n_max={n_max} atoms")
    pos = np.zeros((size, n_max, 3))
    spc = np.zeros((size, n_max), np.int32)
    msk = np.zeros((size, n_max), bool)
    frc = np.zeros((size, n_max, 3))
    eng = np.zeros(size)
    hasf = np.zeros(size, bool)
    wgt = np.zeros(size)
    for b in range(size):
        r = records[b] if b < len(records) else records[0]
        n = r.n_atoms
        pos[b, :n], spc[b, :n], msk[b, :n], eng[b] = r.positions, r.species, True, r.energy
        if r.forces is not None:
            frc[b, :n], hasf[b] = r.forces, True
        wgt[b] = 1.0 if b < len(records) else 0.0
    return Batch(pos, spc, msk, eng, frc, hasf, wgt)


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
