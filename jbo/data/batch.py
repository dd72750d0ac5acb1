"""Records padded into one batch of arrays, a :class:`Batch` (a pytree: numpy on the host,
uploaded as is, gathered and sharded on the device by training; the analysis layer pads
clusters the same way):

    positions [B, Nmax, 3] (Å)   species [B, Nmax] int32   mask [B, Nmax] bool
    energy [B] (eV)              forces [B, Nmax, 3] (eV/Å)  has_forces [B] bool
    weight [B] (0 for padding rows added to fill a fixed batch size)
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.struct
import numpy as np

from jbo.data.records import Record

__all__ = ["Batch", "pad_records"]


@flax.struct.dataclass
class Batch:
    """Padded arrays of a list of structures (module docstring: shapes, units); a pytree."""

    positions: np.ndarray
    species: np.ndarray
    mask: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    has_forces: np.ndarray
    weight: np.ndarray


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
    return Batch(positions=pos, species=spc, mask=msk, energy=eng, forces=frc, has_forces=hasf,
                 weight=wgt)
