"""The checks every reader of reference data applies (:func:`jbo.data.records.read_parents`):

* :func:`check_parents` / :func:`check_records`: the geometry/species check of every structure
  (:func:`jbo.geometry.check_values`: finite coordinates, atomic numbers 1..118 or a model's
  species, no two atoms closer than :data:`jbo.geometry.MIN_DISTANCE` Å), whatever the layout;
* :func:`compact_problem`: the internal consistency of a compact ``.npz`` file's arrays.

Each names what is off; :mod:`jbo.data.validate` reports the same faults among its others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from jbo.data.records import Parent, Record

__all__ = ["check_parents", "check_records", "parent_problem", "compact_problem", "popcount"]

_PARENT_STR = ("cluster", "regime", "split", "method", "basis")


def _problem(positions: np.ndarray, numbers: np.ndarray,
             known_species: Sequence[int] | None = None) -> str | None:
    """:func:`jbo.geometry.check_values` on one structure: its message, or None."""
    from jbo import geometry

    try:
        geometry.check_values(np.asarray(positions)[None], np.asarray(numbers)[None],
                              np.ones((1, len(numbers)), bool), known_species=known_species)
    except ValueError as err:
        return str(err).replace(" (cluster 0)", "")
    return None


def parent_problem(p: Parent, known_species: Sequence[int] | None = None) -> str | None:
    """What is wrong with ``p``'s geometry/species (None: nothing): non-finite coordinates,
    an atomic number outside 1..118 (or outside ``known_species``), two atoms at one place
    (< :data:`jbo.geometry.MIN_DISTANCE` Å). The message names the atoms."""
    return _problem(p.positions, p.numbers, known_species)


def _check_all(items: list, known_species, where: str) -> None:
    """``items``: ``(name, positions[n, 3], numbers[n])``; structures of one size are checked
    together (vectorised), and the first bad one is named."""
    from jbo import geometry

    by_n: dict[int, list] = {}
    for it in items:
        by_n.setdefault(len(it[2]), []).append(it)
    for _, group in sorted(by_n.items()):
        z = np.stack([np.asarray(it[2]) for it in group])
        try:
            geometry.check_values(np.stack([it[1] for it in group]), z, np.ones(z.shape, bool),
                                  known_species=known_species)
            continue
        except ValueError:
            pass
        for name, pos, num in group:
            why = _problem(pos, num, known_species)
            if why is not None:
                raise ValueError(f"{where}{name}: {why}; fix or drop that cluster "
                                 "(`jbo data validate` lists every fault)")


def check_parents(parents: Sequence[Parent], known_species: Sequence[int] | None = None,
                  where: str = "") -> None:
    """The one geometry/species check of every structure read for training, validation or
    decomposition, whatever the layout (:func:`read_parents` applies it): ValueError naming
    the first bad parent (see :func:`parent_problem`)."""
    _check_all([(f"parent {p.cluster} ({p.method}/{p.basis})", p.positions, p.numbers)
                for p in parents], known_species, where)


def check_records(records: Sequence[Record], known_species: Sequence[int] | None = None,
                  where: str = "") -> None:
    """:func:`check_parents` for flat records (e.g. rows handed to training directly), and,
    given ``known_species``, the elements a model was built for."""
    _check_all([(f"{r.cluster} subset {r.subset}", r.positions, r.species) for r in records],
               known_species, where)


def popcount(masks: np.ndarray) -> np.ndarray:
    """``[M]`` int64 number of set bits of non-negative int64 bitmasks."""
    return np.bitwise_count(np.asarray(masks).astype(np.uint64)).astype(np.int64)


_KINDS = {"positions": "f", "energy": "f", "s2": "f", "forces": "f", "numbers": "iu",
          "subsets": "iu", "spin": "iu", "seed": "iu", "n_atoms": "iu", "n_subsets": "iu",
          "has_forces": "b", **{k: "U" for k in _PARENT_STR}}


def compact_problem(z: dict) -> str | None:
    """What is inconsistent in a compact file's arrays (None: nothing): keys, dtypes, lengths
    against the ``n_atoms``/``n_subsets`` sums, bitmasks within ``2^n``, ascending and unique
    subsets per parent, and the forces' length against the subsets' popcounts."""
    missing = sorted(set(_KINDS) - set(z))
    if missing:
        return f"arrays {missing} are missing"
    names = {"f": "float", "iu": "integer", "b": "bool", "U": "str"}
    kinds = [f"{k} has dtype {z[k].dtype}, expected {names[kind]}" for k, kind in _KINDS.items()
             if z[k].dtype.kind not in kind]
    if kinds:
        return "; ".join(kinds)
    n, m = z["n_atoms"], z["n_subsets"]
    n_par = len(n)
    shapes = {k: (n_par,) for k in (*_PARENT_STR, "seed", "n_subsets", "has_forces")}
    if n.ndim != 1:
        return f"n_atoms has shape {n.shape}, expected one entry per parent"
    if n_par and (n.min() < 1 or n.max() > 62):
        return f"n_atoms must be 1..62 (bitmask subsets), got {n.min()}..{n.max()}"
    if n_par and m.ndim == 1 and m.min() < 1:
        return f"parent {int(np.argmin(m))} has n_subsets={m.min()} (at least 1)"
    a, s_tot = int(n.sum()), int(m.sum()) if m.ndim == 1 else -1
    shapes.update(positions=(a, 3), numbers=(a,), subsets=(s_tot,), energy=(s_tot,),
                  spin=(s_tot,), s2=(s_tot,))
    bad = [f"{k} has shape {z[k].shape}, expected {want}" for k, want in shapes.items()
           if z[k].shape != want]
    if bad:
        return "; ".join(bad) + " (from the n_atoms/n_subsets sums)"
    sub = z["subsets"]
    full = np.repeat((np.int64(1) << n.astype(np.int64)) - 1, m)
    out = np.flatnonzero((sub < 1) | (sub > full))
    if len(out):
        i = int(out[0])
        par = int(np.searchsorted(np.cumsum(m), i, side="right"))
        return (f"subset {int(sub[i])} of parent {par} ({z['cluster'][par]}) is outside "
                f"1..{int(full[i])} (n={int(n[par])} atoms)")
    first = np.zeros(len(sub), bool)
    first[np.concatenate([[0], np.cumsum(m)[:-1]]) if n_par else []] = True
    unsorted = np.flatnonzero((np.diff(sub, prepend=-1) <= 0) & ~first)
    if len(unsorted):
        i = int(unsorted[0])
        par = int(np.searchsorted(np.cumsum(m), i, side="right"))
        return (f"the subsets of parent {par} ({z['cluster'][par]}) are not strictly "
                f"ascending (subset {int(sub[i])} after {int(sub[i - 1])})")
    n_f = int(popcount(sub).sum())
    if z["forces"].shape != (n_f, 3):
        return (f"forces has shape {z['forces'].shape}, expected ({n_f}, 3) (one row per atom "
                "of every subset)")
    return None
