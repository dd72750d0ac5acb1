"""Many-body expansion of the reference energies, from the stored subcluster energies.

For a parent of n atoms with every subset S labelled, E(S) indexed by bitmask (E(∅) = 0) is
Möbius-inverted with the engine's :func:`jbo.lattice.mobius` into interaction terms ε(S);
E^(k) = Σ_{|S|=k} ε(S) (:func:`jbo.lattice.order_sums`) and the truncated MBE
E_{≤K} = Σ_{k≤K} E^(k), whose K = n value is the total energy. All energies in eV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jbo import lattice
from jbo.data.records import Parent

__all__ = ["ReferenceMBE", "mbe_from_energies", "reference_mbe", "all_mbe"]


@dataclass(frozen=True)
class ReferenceMBE:
    """The reference MBE of one parent cluster (energies in eV)."""

    cluster: str
    n: int
    energies: np.ndarray   # [2^n] E(S) by bitmask, entry 0 = 0
    terms: np.ndarray      # [2^n] ε(S)
    per_order: np.ndarray  # [n] E^(1), ..., E^(n)
    truncated: np.ndarray  # [n] E_{≤1}, ..., E_{≤n}; truncated[-1] == total
    total: float
    regime: str = ""
    split: str = ""


def mbe_from_energies(energies: np.ndarray, cluster: str = "", **info) -> ReferenceMBE:
    """MBE of a full lattice of subset energies ``[2^n]`` (eV; entry 0, the empty set, is
    taken as 0 whatever it holds)."""
    e = np.asarray(energies, dtype=np.float64)
    n = e.shape[0].bit_length() - 1
    if e.shape != (1 << n,):
        raise ValueError(f"need 2**n subset energies, got shape {e.shape}")
    if np.isnan(e[1:]).any():
        raise ValueError(f"{cluster}: missing subset energies "
                         f"{(np.flatnonzero(np.isnan(e[1:])) + 1).tolist()[:10]}")
    e = e.copy()
    e[0] = 0.0
    terms = np.asarray(lattice.mobius(e))
    per_order = np.asarray(lattice.order_sums(terms, n))
    return ReferenceMBE(cluster=cluster, n=n, energies=e, terms=terms, per_order=per_order,
                        truncated=np.cumsum(per_order), total=float(e[-1]), **info)


def reference_mbe(parent: Parent) -> ReferenceMBE:
    """The MBE of one parent (:class:`jbo.data.records.Parent`); ``ValueError`` naming the
    subsets that are not labelled."""
    return mbe_from_energies(parent.lattice(), parent.cluster, regime=parent.regime,
                             split=parent.split)


def all_mbe(parents: Sequence[Parent], split: str | None = "train"
            ) -> tuple[list[ReferenceMBE], dict[str, str]]:
    """MBEs of every complete parent (of ``split``), and ``{cluster: why skipped}`` for the
    incomplete ones."""
    done, skipped = [], {}
    for p in sorted(parents, key=lambda p: p.cluster):
        if split and p.split != split:
            continue
        if not p.is_complete:
            skipped[p.cluster] = f"{p.full - len(p.subsets)} of {p.full} subsets not labelled"
            continue
        done.append(reference_mbe(p))
    return done, skipped
