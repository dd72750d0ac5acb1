"""Spectra of a model: :func:`decompose_records`, E^(k) of a potential on labelled structures,
through the engine's one path (:func:`jbo.decompose.prepare`, :func:`jbo.decompose.run`): the checks
and programs of :func:`jbo.decompose.body_orders` on the padded batch.

The reference side (stored energies -> spectra: :func:`jbo.data.mbe.reference_spectra`,
``lattice_spectra``, ``subset_energies``) is in the data layer; :mod:`jbo.analysis` re-exports it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

from jbo import checks
from jbo.data.mbe import eps_sq
from jbo.data.spectra import Spectra
from jbo.decompose import prepare, run
from jbo.potential import Potential, as_potential
from jbo.request import Request, stack

__all__ = ["decompose_records"]


# ---------------------------------------------------------------- model spectra
@functools.partial(jax.jit, static_argnums=1)
def _eps_sq_jit(terms, n: int):
    return eps_sq(terms, n)


@jax.jit
def _batched_energy(pot: Potential, positions, species, mask):
    return jax.vmap(pot.energy)(positions, species, mask)


def decompose_records(potential, records: Sequence, *, max_order: int | None = None,
                      mesh: jax.sharding.Mesh | None = None, chunk: int | None = None,
                      layout: str = "auto", orders: bool = True) -> Spectra:
    """The spectra of ``potential`` on ``records`` (each a whole cluster), eV.

    The records are stacked (:func:`jbo.request.stack`, nothing converted before it is
    checked) and go through the engine's one check step, :func:`jbo.decompose.prepare`, and
    :func:`jbo.decompose.run`, exactly as a :func:`jbo.decompose.body_orders` call on that
    padded batch: whatever ``body_orders`` refuses is refused here with the same error.

    Args:
      potential: a :class:`~jbo.potential.Potential`, a trained model, or anything
        :func:`jbo.decompose.body_orders` takes (the parameters are traced, so another
        parameter set of the same architecture reuses the compiled programs).
      records: :class:`jbo.data.records.Record` s (positions, species, cluster, regime).
      max_order: truncate at K (default: exhaustive, with ``eps_sq``).
      mesh: split each batch over this device mesh (:func:`body_orders`'s ``mesh``).
      chunk: clusters per engine call, all padded to the largest cluster (default: one call).
      layout: the engine's exhaustive layout (:func:`jbo.decompose.body_orders`).
      orders: False gives totals only (one batched evaluation, no decomposition).
    """
    records = list(records)
    meta = (tuple(r.cluster for r in records), [r.n_atoms for r in records],
            tuple(r.regime for r in records))
    if not records:  # (callers pass chunk=min(chunk, len(records)): 0 here)
        return Spectra(*meta, [], np.zeros((0, 0)) if orders else None)
    if chunk is not None:
        checks.as_int("chunk", chunk)
    pos, spec, mask = stack([(r.positions, r.species) for r in records])
    req = prepare(potential, pos, spec, atom_mask=mask, max_order=max_order, mesh=mesh,
                  terms=max_order is None, layout=layout, per_call=chunk, orders=orders)
    per, tot, sq = [], [], []
    for lo, part in req.calls():
        keep = slice(0, min(len(records) - lo, part.atom_mask.shape[0]))
        if not orders:
            tot.append(np.asarray(_totals(part))[keep])
            continue
        res = run(part, unbatch=False)
        per.append(np.asarray(res.per_order)[keep])
        tot.append(np.asarray(res.total)[keep])
        if max_order is None:
            sq.append(np.asarray(_eps_sq_jit(res.terms, pos.shape[1]))[keep])
    totals = np.concatenate(tot)
    if not orders:
        return Spectra(*meta, totals)
    return Spectra(*meta, totals, _beyond_n(np.concatenate(per), meta[1]),
                   _beyond_n(np.concatenate(sq), meta[1]) if sq else None)


def _totals(req: Request) -> np.ndarray:
    """``[B]`` energies (eV) of a checked request's whole clusters, refused when not finite."""
    pot = as_potential(req.potential)
    total = np.asarray(_batched_energy(pot, req.positions, req.species, req.atom_mask))
    bad = np.flatnonzero(~np.isfinite(total))
    if bad.size:
        raise FloatingPointError(f"energy_fn returned a non-finite energy (NaN/inf) for "
                                 f"cluster {int(bad[0])}; check the model on that cluster")
    return total


def _beyond_n(v: np.ndarray, n: Sequence[int]) -> np.ndarray:
    """``v[C, K]`` with NaN at k > n (orders a cluster does not have)."""
    v = np.array(v, dtype=np.float64)
    v[np.arange(v.shape[1])[None, :] >= np.asarray(n)[:, None]] = np.nan
    return v
