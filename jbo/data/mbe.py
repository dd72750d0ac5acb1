"""Many-body expansion of the reference energies, from the stored subcluster energies.

For a parent of n atoms with every subset S labelled, E(S) indexed by bitmask (E(∅) = 0) is
Möbius-inverted with the engine's :func:`jbo.lattice.mobius` into interaction terms ε(S);
E^(k) = Σ_{|S|=k} ε(S) (:func:`jbo.lattice.order_sums`) and the truncated MBE
E_{≤K} = Σ_{k≤K} E^(k), whose K = n value is the total energy. All energies in eV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jbo import lattice
from jbo.data.store import is_labelled

__all__ = ["ReferenceMBE", "subset_energies", "mbe_from_energies", "reference_mbe",
           "all_mbe"]


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


def _collect(db, method: str, basis: str, **sel) -> dict[str, dict]:
    """``{cluster: {"n": n, "E": {mask: eV}, "regime", "split"}}`` from the ok rows."""
    out: dict[str, dict] = {}
    for r in db.select(method=method, basis=basis, status="ok", include_data=False,
                       columns=["id", "energy", "key_value_pairs"], **sel):
        if not is_labelled(r):
            continue  # an ok row without energy is not done (labelling fills it in again)
        c = out.setdefault(r.cluster, dict(n=int(r.n_parent), E={}, regime=r.get("regime", ""),
                                           split=r.get("split", "")))
        c["E"][int(r.subset)] = float(r.energy)
    return out


def subset_energies(db, cluster: str, method: str = "fci", basis: str = "sto-3g"
                    ) -> np.ndarray:
    """``[2^n]`` stored energies (eV) of one cluster by bitmask; NaN where missing, [0] = 0."""
    info = _collect(db, method, basis, cluster=cluster).get(cluster)
    if info is None:
        raise KeyError(f"no ok rows for cluster {cluster!r} ({method}/{basis})")
    return _lattice(info)


def _lattice(info: dict) -> np.ndarray:
    e = np.full(1 << info["n"], np.nan)
    e[0] = 0.0
    for m, v in info["E"].items():
        e[m] = v
    return e


def reference_mbe(db, cluster: str, method: str = "fci", basis: str = "sto-3g"
                  ) -> ReferenceMBE:
    """The MBE of one stored cluster; ``ValueError`` if a subset energy is missing."""
    info = _collect(db, method, basis, cluster=cluster).get(cluster)
    if info is None:
        raise KeyError(f"no ok rows for cluster {cluster!r} ({method}/{basis})")
    return mbe_from_energies(_lattice(info), cluster, regime=info["regime"],
                             split=info["split"])


def all_mbe(db, method: str = "fci", basis: str = "sto-3g", split: str | None = "train"
            ) -> tuple[list[ReferenceMBE], dict[str, str]]:
    """MBEs of every complete cluster, and ``{cluster: why skipped}`` for incomplete ones."""
    sel = {"split": split} if split else {}
    done, skipped = [], {}
    for cid, info in sorted(_collect(db, method, basis, **sel).items()):
        missing = (1 << info["n"]) - 1 - len(info["E"])
        if missing:
            skipped[cid] = f"{missing} of {(1 << info['n']) - 1} subsets have no ok energy"
            continue
        done.append(mbe_from_energies(_lattice(info), cid, regime=info["regime"],
                                      split=info["split"]))
    return done, skipped
