"""Input validation and neighbour graphs of clusters (host side, numpy).

Validation runs on concrete arrays only; under ``jit`` (tracers) shapes are still checked but
values cannot be, so validate before tracing when the input comes from outside.
"""

from __future__ import annotations

import jax
import numpy as np

#: Two atoms closer than this (Å) are reported as duplicates.
MIN_DISTANCE = 1e-3


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

    pos = jnp.asarray(positions)
    if pos.ndim not in (2, 3) or pos.shape[-1] != 3:
        raise ValueError(
            f"positions must have shape [N, 3] or [B, N, 3] (Å), got {tuple(pos.shape)}"
        )
    if not jnp.issubdtype(pos.dtype, jnp.floating):
        raise TypeError(f"positions must be floating point (Å), got dtype {pos.dtype}")
    batched = pos.ndim == 3
    shape = pos.shape[:-1]
    if shape[-1] == 0:
        raise ValueError("the cluster is empty (N = 0 atoms): nothing to decompose")
    spec = jnp.ones(shape, jnp.int32) if species is None else jnp.asarray(species)
    if tuple(spec.shape) != tuple(shape):
        raise ValueError(
            f"species must have shape {tuple(shape)} to match positions {tuple(pos.shape)}, "
            f"got {tuple(spec.shape)}"
        )
    if not jnp.issubdtype(spec.dtype, jnp.integer):
        raise TypeError(f"species must be integer atomic numbers, got dtype {spec.dtype}")
    mask = jnp.ones(shape, bool) if atom_mask is None else jnp.asarray(atom_mask)
    if tuple(mask.shape) != tuple(shape) or mask.dtype != bool:
        raise ValueError(
            f"atom_mask must be a bool array of shape {tuple(shape)}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    if not batched:
        pos, spec, mask = pos[None], spec[None], mask[None]
    return pos, spec.astype(jnp.int32), mask, batched


def check_values(positions, species, atom_mask, min_distance: float = MIN_DISTANCE) -> None:
    """Raise a ValueError naming the problem for non-finite, duplicate or missing atoms.

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
    if (spec[mask] <= 0).any():
        b, i = np.argwhere((spec <= 0) & mask)[0]
        raise ValueError(f"atom {i} (cluster {b}) has invalid atomic number {spec[b, i]}")
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
