"""Input validation and neighbour graphs of clusters (host side, numpy).

Validation runs on concrete arrays only; under ``jit`` (tracers) shapes are still checked but
values cannot be, so validate before tracing when the input comes from outside.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import jax
import numpy as np

#: Two atoms closer than this (Å) are reported as duplicates.
MIN_DISTANCE = 1e-3
#: Largest atomic number (oganesson).
MAX_Z = 118


def check_cutoff(cutoff, name: str = "cutoff", *, optional: bool = True) -> float | None:
    """The one check of every cutoff (Å) the engine takes: a finite length > 0 as a float.

    ``None`` passes when ``optional`` (no cutoff: a non-local model, or no connected mode).
    Strings, bools, NaN, inf, zero and negative values are refused with one line naming
    ``name`` (the option it came in by, e.g. ``"--cutoff"``).
    """
    if cutoff is None and optional:
        return None
    if isinstance(cutoff, (bool, np.bool_, str, bytes)) or not np.isscalar(cutoff) \
            and np.ndim(cutoff) != 0:
        raise TypeError(f"{name} must be a length in Å (a positive number), got {cutoff!r}")
    try:
        value = float(cutoff)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a length in Å (a positive number), got {cutoff!r}"
                        ) from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite length > 0 Å, got {cutoff!r}"
                         + (" (or None for no cutoff)" if optional else ""))
    return value


def is_concrete(*arrays) -> bool:
    """True when none of the arrays is a JAX tracer (their values can be inspected)."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def as_batch(positions, species=None, atom_mask=None):
    """Check shapes and promote a single cluster to a batch of one.

    Args:
      positions: ``[N, 3]`` or ``[B, N, 3]`` (Å).
      species: ``[N]``/``[B, N]`` atomic numbers, or None for hydrogen everywhere.
      atom_mask: ``[N]``/``[B, N]`` bool marking real (non-padding) atoms, or None for all.
    Returns: ``(positions[B,N,3], species[B,N] int32, atom_mask[B,N] bool, batched: bool)``.
    """
    import jax.numpy as jnp

    # concrete input is staged with numpy: jnp ops on it would each compile a small program
    xp = np if is_concrete(positions, species, atom_mask) else jnp
    pos = xp.asarray(positions)
    if pos.ndim not in (2, 3) or pos.shape[-1] != 3:
        raise ValueError(
            f"positions must have shape [N, 3] or [B, N, 3] (Å), got {tuple(pos.shape)}"
        )
    if not jnp.issubdtype(pos.dtype, jnp.floating):
        raise TypeError(f"positions must be floating point (Å), got dtype {pos.dtype}")
    batched = pos.ndim == 3
    shape = pos.shape[:-1]
    if shape[-1] == 0:
        raise ValueError("the cluster is empty (N = 0 atoms): pass at least one atom")
    spec = xp.ones(shape, np.int32) if species is None else xp.asarray(species)
    if tuple(spec.shape) != tuple(shape):
        raise ValueError(
            f"species must have shape {tuple(shape)} to match positions {tuple(pos.shape)}, "
            f"got {tuple(spec.shape)}"
        )
    if not jnp.issubdtype(spec.dtype, jnp.integer):
        raise TypeError(f"species must be integer atomic numbers, got dtype {spec.dtype}")
    mask = xp.ones(shape, bool) if atom_mask is None else xp.asarray(atom_mask)
    if tuple(mask.shape) != tuple(shape) or mask.dtype != bool:
        raise ValueError(
            f"atom_mask must be a bool array of shape {tuple(shape)}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    if is_concrete(spec, mask):  # before the int32 cast, which would wrap 2**40 to 0
        z, present = np.asarray(spec), np.asarray(mask)
        bad = ((z < 1) | (z > MAX_Z)) & present
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"atom {at[-1]} has invalid atomic number {int(z[at])} (elements: 1..{MAX_Z}); "
                "pass atomic numbers (H = 1), species 0 only for masked padding atoms"
            )
    if not batched:
        pos, spec, mask = pos[None], spec[None], mask[None]
    return pos, spec.astype(np.int32), mask, batched


def validate(positions, species=None, atom_mask=None, *, min_distance: float = MIN_DISTANCE,
             known_species: Sequence[int] | None = None):
    """The one input check of every entry point (engine, models, calculator, training data).

    Shapes and dtypes are always checked; values (finite coordinates, real elements, no two atoms
    at one position, elements among ``known_species``) only on concrete input, never on tracers.
    Returns :func:`as_batch`'s ``(positions[B,N,3], species[B,N], atom_mask[B,N], batched)``.
    """
    pos, spec, mask, batched = as_batch(positions, species, atom_mask)
    if is_concrete(pos, spec, mask):
        check_values(pos, spec, mask, min_distance, known_species)
    return pos, spec, mask, batched


def check_values(positions, species, atom_mask, min_distance: float = MIN_DISTANCE,
                 known_species: Sequence[int] | None = None) -> None:
    """Raise a ValueError naming the problem for non-finite, duplicate or missing atoms, or
    (given ``known_species``) present atoms of an element outside it.

    Args: batched arrays as returned by :func:`as_batch` (concrete).
    """
    pos = np.asarray(positions, dtype=np.float64)
    mask = np.asarray(atom_mask, dtype=bool)
    bad = ~np.isfinite(pos).all(-1) & mask
    if bad.any():
        b, i = np.argwhere(bad)[0]
        raise ValueError(
            f"positions of atom {i} (cluster {b}) are not finite: {pos[b, i].tolist()}; "
            "fix the input geometry (NaN/inf coordinates cannot be decomposed)"
        )
    if not mask.any(-1).all():
        b = int(np.flatnonzero(~mask.any(-1))[0])
        raise ValueError(f"cluster {b} has no atoms (atom_mask is all False)")
    spec = np.asarray(species)
    bad_z = ((spec <= 0) | (spec > MAX_Z)) & mask
    if bad_z.any():
        b, i = np.argwhere(bad_z)[0]
        raise ValueError(f"atom {i} (cluster {b}) has invalid atomic number {spec[b, i]}")
    if known_species is not None:
        unknown = sorted(set(spec[mask].tolist()) - {int(z) for z in known_species})
        if unknown:
            raise ValueError(
                f"atomic numbers {unknown} are not among the model's species "
                f"{tuple(known_species)}; create the model with species=(...) listing every "
                "element it must handle"
            )
    d = pair_distances(pos)
    both = mask[:, :, None] & mask[:, None, :]
    n = pos.shape[1]
    close = both & (d < min_distance) & ~np.eye(n, dtype=bool)
    if close.any():
        b, i, j = np.argwhere(close)[0]
        raise ValueError(
            f"atoms {i} and {j} (cluster {b}) are {d[b, i, j]:.2e} Å apart (< {min_distance} Å): "
            "duplicate atoms at one position; remove one of them"
        )


def pair_distances(positions: np.ndarray) -> np.ndarray:
    """Distances ``[..., N, N]`` (Å) between all atoms of ``positions[..., N, 3]``."""
    pos = np.asarray(positions, dtype=np.float64)
    return np.linalg.norm(pos[..., :, None, :] - pos[..., None, :, :], axis=-1)


def cutoff_graph(positions, cutoff: float, atom_mask=None) -> np.ndarray:
    """Adjacency ``[..., N, N]`` bool: real atoms i != j closer than ``cutoff`` (Å)."""
    pos = np.asarray(positions, dtype=np.float64)
    n = pos.shape[-2]
    adj = (pair_distances(pos) < cutoff) & ~np.eye(n, dtype=bool)
    if atom_mask is not None:
        mask = np.asarray(atom_mask, bool)
        adj &= mask[..., :, None] & mask[..., None, :]
    return adj


def graph_hash(positions, cutoff: float, atom_mask=None) -> np.ndarray:
    """``[B]`` int64 fingerprints of the cutoff graphs of ``positions[B, N, 3]`` (host side):
    equal exactly when the graphs (edges between real atoms) are equal, up to hash collisions."""
    adj = cutoff_graph(positions, cutoff, atom_mask)
    adj = adj.reshape((-1,) + adj.shape[-2:])
    return np.array(
        [int.from_bytes(hashlib.blake2b(np.packbits(a).tobytes(), digest_size=8).digest(),
                        "little", signed=True) for a in adj], dtype=np.int64)
