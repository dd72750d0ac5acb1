"""The one result type of body-order spectra: per-order energies of a set of clusters.

A :class:`Spectra` holds, per cluster, E^(1..K) (eV) of a model (:func:`jbo.analysis.
decompose_records`) or of the reference (:func:`jbo.data.mbe.reference_spectra`); entries that
do not exist (k > n) or are not known are NaN. :class:`Spectrum` is the view of one of its rows.
It lives in the data layer because the reference MBE of a dataset is one (``jbo data mbe``,
``jbo data validate``); :mod:`jbo.analysis` re-exports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from functools import cached_property

import numpy as np

__all__ = ["Spectra", "Spectrum"]


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """One cluster's row of a :class:`Spectra` (energies in eV).

    ``per_order[n]`` E^(1..n) (fewer with ``max_order``), ``truncated`` its cumulative sums
    E_MBE(1..), ``total`` E, ``terms[2^n]`` ε(S) by bitmask when kept (reference), else None.
    """

    cluster: str
    n: int
    regime: str
    per_order: np.ndarray
    truncated: np.ndarray
    total: float
    terms: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Spectra:
    """Per-order energies of C clusters, model or reference.

    Attributes:
      clusters: ``C`` cluster names (unique).
      n: ``[C]`` atoms per cluster.
      regimes: ``C`` density regimes ("" when unknown).
      totals: ``[C]`` energy E of each whole cluster (eV).
      orders: ``[C, K]`` E^(k) (eV), NaN for k > n; None when only totals are known.
      eps_sq: ``[C, K]`` Σ_{|S|=k} ε(S)² (eV²), NaN for k > n; None when not computed.
      terms: per cluster ``[2^n]`` ε(S) by bitmask (eV), or None when not kept.
    """

    clusters: tuple[str, ...]
    n: np.ndarray
    regimes: tuple[str, ...]
    totals: np.ndarray
    orders: np.ndarray | None = None
    eps_sq: np.ndarray | None = None
    terms: tuple[np.ndarray, ...] | None = None

    def __post_init__(self):
        c = len(self.clusters)
        set_ = object.__setattr__
        set_(self, "clusters", tuple(self.clusters))
        set_(self, "regimes", tuple(self.regimes))
        set_(self, "n", np.asarray(self.n, dtype=np.int64).reshape(c))
        set_(self, "totals", np.asarray(self.totals, dtype=np.float64).reshape(c))
        for name in ("orders", "eps_sq"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, dtype=np.float64)
                if v.ndim != 2 or v.shape[0] != c:
                    raise ValueError(f"Spectra.{name} must be [C={c}, K], got {v.shape}")
                set_(self, name, v)
        if len(self.regimes) != c or (self.terms is not None and len(self.terms) != c):
            raise ValueError(f"Spectra: {c} clusters but {len(self.regimes)} regimes"
                             + ("" if self.terms is None else f", {len(self.terms)} terms"))
        if len(set(self.clusters)) != c:
            raise ValueError("Spectra: cluster names must be unique")

    # ------------------------------------------------------------ construction
    @classmethod
    def concat(cls, parts: Sequence[Spectra]) -> Spectra:
        """The rows of ``parts`` in order (orders padded with NaN to the largest K)."""
        if not parts:
            return cls((), [], (), [])
        k = max((p.K for p in parts), default=0)

        def stack(name):
            vals = [getattr(p, name) for p in parts]
            if all(v is None for v in vals):
                return None
            vals = [np.full((len(p), 0), np.nan) if v is None else v for p, v in zip(parts, vals)]
            return np.concatenate([np.pad(v, ((0, 0), (0, k - v.shape[1])),
                                          constant_values=np.nan) for v in vals])

        terms = None if any(p.terms is None for p in parts) else \
            tuple(t for p in parts for t in p.terms)
        return cls(tuple(c for p in parts for c in p.clusters),
                   np.concatenate([p.n for p in parts]), tuple(r for p in parts for r in p.regimes),
                   np.concatenate([p.totals for p in parts]), stack("orders"), stack("eps_sq"),
                   terms)

    @classmethod
    def from_json(cls, d: dict, prefix: str = "") -> Spectra:
        """Inverse of :meth:`to_json`; ``prefix="ref_"`` reads a cell's ``ref_total`` and
        ``ref_per_order`` (the names, sizes and regimes are shared)."""
        n = np.asarray(d["n"], dtype=np.int64)
        rows = d[prefix + "per_order"]
        orders = None
        if any(r is not None for r in rows):
            k = max((len(r) for r in rows if r is not None), default=0)
            orders = np.full((len(n), k), np.nan)
            for i, r in enumerate(rows):
                if r is not None:
                    orders[i, :len(r)] = r
        return cls(tuple(d["cluster"]), n, tuple(d["regime"]), d[prefix + "total"], orders)

    # ------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.clusters)

    def __iter__(self) -> Iterator[Spectrum]:
        return (self[i] for i in range(len(self)))

    def __contains__(self, cluster: str) -> bool:
        return cluster in self.index

    def __getitem__(self, i: int) -> Spectrum:
        n = int(self.n[i])
        per = (np.full(n, np.nan) if self.orders is None
               else self.orders[i, :min(n, self.K)].copy())
        return Spectrum(self.clusters[i], n, self.regimes[i], per, np.cumsum(per),
                        float(self.totals[i]), None if self.terms is None else self.terms[i])

    @property
    def K(self) -> int:
        """Number of orders held (0 for totals only)."""
        return 0 if self.orders is None else int(self.orders.shape[1])

    @cached_property
    def index(self) -> dict[str, int]:
        """``{cluster: row}``."""
        return {c: i for i, c in enumerate(self.clusters)}

    def rows(self, keep) -> Spectra:
        """The rows selected by a bool mask ``[C]`` or a sequence of row indices."""
        idx = np.arange(len(self))[np.asarray(keep)] if np.asarray(keep).dtype == bool \
            else np.asarray(keep, dtype=np.int64).reshape(-1)

        def pick(v):
            return None if v is None else v[idx]

        return Spectra(tuple(self.clusters[i] for i in idx), self.n[idx],
                       tuple(self.regimes[i] for i in idx), self.totals[idx],
                       pick(self.orders), pick(self.eps_sq),
                       None if self.terms is None else tuple(self.terms[i] for i in idx))

    def take(self, clusters: Sequence[str]) -> Spectra:
        """The rows of ``clusters``, in that order; ``KeyError`` naming any not held."""
        missing = [c for c in clusters if c not in self.index]
        if missing:
            raise KeyError(f"no spectra of {missing[:5]} ({len(missing)} clusters) in this set")
        return self.rows([self.index[c] for c in clusters])

    def by_regime(self) -> dict[str, Spectra]:
        """``{regime: its rows}``, regimes sorted."""
        regimes = np.asarray(self.regimes, dtype=object)
        return {r: self.rows(regimes == r) for r in sorted(set(self.regimes))}

    def per_cluster(self) -> list[list[float] | None]:
        """E^(1..n) (eV) of each cluster as lists (JSON-ready); None where not known."""
        if self.orders is None:
            return [None] * len(self)
        return [None if not np.isfinite(s.per_order).any() else s.per_order.tolist()
                for s in self]

    def to_json(self) -> dict[str, list]:
        """``{cluster, n, regime, total, per_order}`` lists (a study cell's test-set entry)."""
        return dict(cluster=list(self.clusters), n=self.n.tolist(), regime=list(self.regimes),
                    total=self.totals.tolist(), per_order=self.per_cluster())
