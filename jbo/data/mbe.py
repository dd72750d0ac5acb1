"""Many-body expansion of stored reference energies: E(S) by bitmask is Möbius-inverted into
ε(S), E^(k) = Σ_{|S|=k} ε(S), E_MBE(K) = Σ_{k≤K} E^(k). Energies in eV.

* :func:`reference_spectra`: the reference MBE of every parent whose subsets are all labelled,
  from one adapter (:func:`subset_energies`: parents or records -> energies by bitmask) and the
  engine's assembler (:func:`jbo.assembly.assemble_lattice`), as :func:`lattice_spectra`.
* :func:`reference_mbe` (one parent) and :func:`all_mbe` (every complete parent of a split):
  thin views of it. All re-exported by :mod:`jbo.analysis` (which compares them with models).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jbo import lattice
from jbo.assembly import assemble_lattice_jit
from jbo.data.records import Parent
from jbo.data.spectra import Spectra, Spectrum

__all__ = ["ReferenceMBE", "reference_mbe", "all_mbe", "reference_spectra", "lattice_spectra",
           "subset_energies", "eps_sq"]

#: The reference MBE of one parent: ``cluster, n, regime, per_order[n], truncated[n], total,
#: terms[2^n]`` (:class:`jbo.data.spectra.Spectrum`).
ReferenceMBE = Spectrum


def reference_mbe(parent: Parent) -> ReferenceMBE:
    """The MBE of one parent (:class:`jbo.data.records.Parent`); ``ValueError`` naming the
    subsets that are not labelled."""
    return reference_spectra([parent], strict=True)[0]


def all_mbe(parents: Sequence[Parent], split: str | None = "train"
            ) -> tuple[list[ReferenceMBE], dict[str, str]]:
    """MBEs of every complete parent (of ``split``), sorted by cluster, and ``{cluster: why
    skipped}`` for the incomplete ones."""
    chosen = [p for p in parents if not split or p.split == split]
    skipped = {p.cluster: f"{p.full - len(p.subsets)} of {p.full} subsets not labelled"
               for p in chosen if not p.is_complete}
    return list(reference_spectra(chosen)), skipped


def eps_sq(terms, n: int):
    """Σ_{|S|=k} ε(S)² per order ``[B, n]`` from lattice-indexed terms ``[B, 2^n]``."""
    return lattice.order_sums(terms**2, n, axis=1)


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
        sq[rows, :size] = np.asarray(eps_sq(res.terms, size))
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
