"""Spectra of a model: :func:`decompose_records`, E^(k) of a potential on labelled structures,
by :func:`jbo.decompose.body_orders` (its checks included; its programs per padded shape).

The reference side (stored energies -> spectra: :func:`jbo.data.mbe.reference_spectra`,
``lattice_spectra``, ``subset_energies``) is in the data layer; :mod:`jbo.analysis` re-exports it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jbo import checks, geometry
from jbo.data.batch import pad_records
from jbo.data.mbe import eps_sq
from jbo.data.spectra import Spectra
from jbo.decompose import body_orders
from jbo.models.model import Model
from jbo.potential import Potential, as_potential

__all__ = ["decompose_records"]


# ---------------------------------------------------------------- model spectra
@functools.partial(jax.jit, static_argnums=1)
def _eps_sq_jit(terms, n: int):
    return eps_sq(terms, n)


@jax.jit
def _batched_energy(pot: Potential, positions, species, mask):
    return jax.vmap(pot.energy)(positions, species, mask)


def _spectra(fn, positions, species, mask, max_order, layout, orders, mesh):
    """One padded batch through the engine's checked entry points (no jit around them: the
    host-side checks of :func:`jbo.checks.concrete_input` see concrete input, and the
    engine's own programs take the potential as a traced argument, so a new parameter set of
    the same architecture reuses them)."""
    if not orders:
        pos, spec, amask, _ = geometry.validate(positions, species, mask)
        pot = as_potential(fn)
        checks.concrete_input(pot, pos, spec, amask)
        return None, _batched_energy(pot, pos, spec, amask), None
    res = body_orders(fn, positions, species, max_order=max_order, atom_mask=mask,
                      terms=max_order is None, layout=layout, mesh=mesh)
    sq = None if max_order is not None else _eps_sq_jit(res.terms, positions.shape[-2])
    return res.per_order, res.total, sq


def decompose_records(potential, records: Sequence, *, max_order: int | None = None,
                      mesh: jax.sharding.Mesh | None = None, chunk: int | None = None,
                      layout: str = "auto", orders: bool = True) -> Spectra:
    """The spectra of ``potential`` on ``records`` (each a whole cluster), eV.

    Args:
      potential: a :class:`~jbo.potential.Potential`, a trained model, or anything
        :func:`jbo.decompose.body_orders` takes; decomposed by ``body_orders`` itself (same
        checks: the masking contract, finite positions; the parameters are traced, so another
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
    if not records:
        return Spectra(*meta, [], np.zeros((0, 0)) if orders else None)
    n_max = max(meta[1])
    size = chunk or len(records)
    if isinstance(potential, Model):
        potential = potential.potential
    per, tot, sq = [], [], []
    for i in range(0, len(records), size):
        part = records[i:i + size]
        b = pad_records(part, n_max=n_max, size=size)
        args = jnp.asarray(b.positions), jnp.asarray(b.species), jnp.asarray(b.mask)
        out = _spectra(potential, *args, max_order, layout, orders, mesh)
        for acc, v in zip((per, tot, sq), out):
            if v is not None:
                acc.append(np.asarray(v)[:len(part)])
    totals = np.concatenate(tot)
    if not orders:
        return Spectra(*meta, totals)
    return Spectra(*meta, totals, _beyond_n(np.concatenate(per), meta[1]),
                   _beyond_n(np.concatenate(sq), meta[1]) if sq else None)


def _beyond_n(v: np.ndarray, n: Sequence[int]) -> np.ndarray:
    """``v[C, K]`` with NaN at k > n (orders a cluster does not have)."""
    v = np.array(v, dtype=np.float64)
    v[np.arange(v.shape[1])[None, :] >= np.asarray(n)[:, None]] = np.nan
    return v
