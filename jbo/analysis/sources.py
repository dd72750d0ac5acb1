"""Where spectra come from: a model decomposed by the engine, or the reference's stored energies.

* :func:`decompose_records`: E^(k) of a potential on labelled structures, by
  :func:`jbo.decompose.body_orders` (its checks included; its programs per padded shape).
* :func:`reference_spectra`: the reference MBE of every parent whose subsets are all labelled,
  from one adapter (:func:`subset_energies`: parents or records -> energies by bitmask) and the
  engine's assembler (:func:`jbo.assembly.assemble_lattice`), as :func:`lattice_spectra`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jbo import checks, geometry, lattice
from jbo.analysis.spectra import Spectra
from jbo.assembly import assemble_lattice_jit
from jbo.data.batch import pad_records
from jbo.decompose import body_orders
from jbo.models.trained import Trained
from jbo.potential import Potential, as_potential

__all__ = ["decompose_records", "reference_spectra", "lattice_spectra", "subset_energies"]


# ---------------------------------------------------------------- model spectra
def _eps_sq(terms, n: int):
    """Σ_{|S|=k} ε(S)² per order from lattice-indexed terms ``[B, 2^n]``."""
    return lattice.order_sums(terms**2, n, axis=1)


@functools.partial(jax.jit, static_argnums=1)
def _eps_sq_jit(terms, n: int):
    return _eps_sq(terms, n)


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
    if isinstance(potential, Trained):
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


# ---------------------------------------------------------------- reference spectra
def subset_energies(items: Sequence) -> list[tuple[str, str, np.ndarray]]:
    """The one adapter from labelled data to lattices: ``(cluster, regime, E[2^n])`` per
    cluster, E(S) (eV) by bitmask, entry 0 (the empty set) = 0, NaN where not labelled.

    ``items``: :class:`jbo.data.records.Parent` s, or :class:`jbo.data.records.Record` s
    (grouped by cluster, in first-seen order).
    """
    out: dict[str, tuple[str, str, np.ndarray]] = {}
    for it in items:
        if hasattr(it, "lattice"):  # a Parent: every labelled subset at once
            out[it.cluster] = (it.cluster, it.regime, it.lattice())
            continue
        if it.cluster not in out:
            e = np.full(1 << it.n_parent, np.nan)
            e[0] = 0.0
            out[it.cluster] = (it.cluster, it.regime, e)
        out[it.cluster][2][it.subset] = it.energy
    return list(out.values())


def lattice_spectra(energies: Sequence[np.ndarray], clusters: Sequence[str] | None = None,
                    regimes: Sequence[str] | None = None) -> Spectra:
    """Spectra (with ``eps_sq`` and ``terms``) of complete lattices ``energies[c][2^n_c]``
    (eV by bitmask; entry 0 is taken as 0): Möbius inversion by the engine's assembler, one
    call per cluster size."""
    e = [np.asarray(x, dtype=np.float64).copy() for x in energies]
    c = len(e)
    clusters = tuple(clusters) if clusters is not None else tuple(str(i) for i in range(c))
    regimes = tuple(regimes) if regimes is not None else ("",) * c
    n = np.array([x.shape[0].bit_length() - 1 for x in e], dtype=np.int64)
    for name, x, k in zip(clusters, e, n):
        if x.shape != (1 << k,):
            raise ValueError(f"{name}: need 2**n subset energies, got shape {x.shape}")
        if np.isnan(x[1:]).any():
            raise ValueError(f"{name}: missing subset energies "
                             f"{(np.flatnonzero(np.isnan(x[1:])) + 1).tolist()[:10]}")
        x[0] = 0.0
    k_max = int(n.max(initial=0))
    orders, sq = np.full((c, k_max), np.nan), np.full((c, k_max), np.nan)
    totals, terms = np.zeros(c), [None] * c
    for size in sorted(set(n.tolist())):
        rows = np.flatnonzero(n == size)
        res = assemble_lattice_jit(jnp.asarray(np.stack([e[i] for i in rows])), None,
                                   jnp.ones((len(rows), size), bool), True)
        orders[rows, :size] = np.asarray(res.per_order)
        sq[rows, :size] = np.asarray(_eps_sq(res.terms, size))
        totals[rows] = np.asarray(res.total)
        for j, i in enumerate(rows):
            terms[i] = np.asarray(res.terms[j])
    return Spectra(clusters, n, regimes, totals, orders, sq, tuple(terms))


def reference_spectra(items: Sequence, *, strict: bool = False) -> Spectra:
    """The reference MBE of every cluster in ``items`` (parents or records, see
    :func:`subset_energies`) whose subsets are all labelled, rows sorted by cluster name.

    Incomplete clusters are skipped, or with ``strict`` refused by a ``ValueError`` naming the
    missing subsets.
    """
    lat = sorted(subset_energies(items), key=lambda t: t[0])
    if not strict:
        lat = [t for t in lat if not np.isnan(t[2]).any()]
    return lattice_spectra([t[2] for t in lat], [t[0] for t in lat], [t[1] for t in lat])
