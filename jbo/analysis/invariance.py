"""How far a model is from rotation invariance: its energy's spread over random orientations.

A model that is invariant by construction (SOAP-BPNN, ACE, MACE, NequIP) gives round-off
(~1e-12 meV/atom); one that learns invariance from augmentation (PET) gives its rotational
error, to be read against its energy error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from jbo.analysis.sources import decompose_records
from jbo.rotations import random_rotations

__all__ = ["rotational_error", "learned_rotational_error", "is_rotation_invariant"]


def is_rotation_invariant(model) -> bool:
    """False for a model (module, or anything with a ``module``) that declares it is not
    rotation-invariant by construction (the zoo's ``rotation_invariant`` class constant: PET);
    such a model's :func:`rotational_error` is worth reporting. Other modules count as
    invariant."""
    return bool(getattr(getattr(model, "module", model), "rotation_invariant", True))


def rotational_error(potential, records: Sequence, n_rotations: int = 8, seed: int = 0,
                     chunk: int = 256) -> dict:
    """The spread of E/n over ``n_rotations`` Haar-random orientations of each cluster.

    Args:
      potential: anything :func:`jbo.analysis.decompose_records` takes (a Potential, a
        trained model, an energy function).
      records: whole structures (:class:`jbo.data.records.Record`), each turned about its
        centroid by its own ``n_rotations`` >= 2 rotations (seeded by ``seed``).
      chunk: structures per compiled evaluation.
    Returns (meV/atom): ``mean_std`` / ``max_std`` (over clusters, of each cluster's standard
    deviation (ddof 0) of E/n) and ``mean_spread`` / ``max_spread`` (of max − min), each with
    the suffix ``_mev_per_atom``; and ``n_clusters``, ``n_rotations``, ``seed``.
    """
    records = list(records)
    if not records:
        raise ValueError("rotational_error needs at least one structure; got no records")
    if not isinstance(n_rotations, int) or n_rotations < 2:
        raise ValueError(f"n_rotations must be an integer >= 2, got {n_rotations!r}")
    rot = np.asarray(random_rotations(jax.random.PRNGKey(seed), (len(records), n_rotations)))
    turned = []
    for r, rs in zip(records, rot):
        x = np.asarray(r.positions, np.float64)
        x = x - x.mean(0)
        turned += [dataclasses.replace(r, positions=x @ m.T, forces=None,
                                       cluster=f"{r.cluster}@rotation{i}")
                   for i, m in enumerate(rs)]
    e = decompose_records(potential, turned, orders=False,
                          chunk=min(chunk, len(turned))).totals
    n = np.array([r.n_atoms for r in records], np.float64)
    per_atom = 1e3 * e.reshape(len(records), n_rotations) / n[:, None]  # meV/atom
    std, spread = per_atom.std(1), np.ptp(per_atom, 1)
    return {"mean_std_mev_per_atom": float(std.mean()), "max_std_mev_per_atom": float(std.max()),
            "mean_spread_mev_per_atom": float(spread.mean()),
            "max_spread_mev_per_atom": float(spread.max()), "n_clusters": len(records),
            "n_rotations": n_rotations, "seed": seed}


def learned_rotational_error(model, records: Sequence, **kw) -> dict | None:
    """:func:`rotational_error` of a model that learns invariance (``is_rotation_invariant``
    False: PET) on ``records``; None for a model invariant by construction (its error is
    round-off, not worth the evaluations) or without records."""
    records = list(records)
    if not records or is_rotation_invariant(model):
        return None
    return rotational_error(model, records, **kw)
