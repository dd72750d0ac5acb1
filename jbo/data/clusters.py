"""Random hydrogen clusters (ASE ``Atoms``) and their subclusters.

Pure functions: the same ``(n, regime, seed)`` always gives the same cluster, on any
machine (``numpy.random.default_rng`` streams are stable across platforms).

A cluster is grown one atom at a time: each new atom is placed at a random direction and a
random distance ``d in [d_min, d_max]`` from a randomly chosen atom already placed, and the
placement is accepted only if it keeps every pair at least ``d_min`` apart. Hence

* every pair distance is >= ``d_min`` (minimum-distance criterion),
* every atom's nearest-neighbour distance lies in ``[d_min, d_max]``,
* the graph "pairs closer than ``d_max``" is connected (connectivity criterion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from ase import Atoms

from jbo import lattice

__all__ = [
    "Regime", "REGIMES", "cluster_id", "random_cluster", "generate", "subcluster",
    "subsets", "nearest_neighbour_distances", "is_connected", "check_geometry",
]


@dataclass(frozen=True)
class Regime:
    """A density regime: nearest-neighbour distances drawn from ``[d_min, d_max]`` (Å)."""

    name: str
    d_min: float
    d_max: float


REGIMES: dict[str, Regime] = {
    "low": Regime("low", 1.5, 2.5),    # stretched: near the atomic limit, strong correlation
    "high": Regime("high", 0.7, 1.2),  # compressed: around and below the H2 bond length
}

MAX_TRIES = 10_000


def cluster_id(regime: str, n: int, seed: int) -> str:
    """Id of a parent cluster, e.g. ``low-n6-s0012``."""
    return f"{regime}-n{n}-s{seed:04d}"


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def random_cluster(n: int, regime: str | Regime, seed: int) -> Atoms:
    """A random connected H_n cluster in a density regime, reproducible from ``seed``.

    Positions are in Å and centred on the origin (no cell, no PBC). ``atoms.info`` holds
    ``cluster``, ``regime``, ``seed`` and ``n_parent``.
    """
    if isinstance(regime, str) and regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; known: {sorted(REGIMES)}")
    reg = REGIMES[regime] if isinstance(regime, str) else regime
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    pos = np.zeros((1, 3))
    tries = 0
    while len(pos) < n:
        tries += 1
        if tries > MAX_TRIES:  # pragma: no cover - cannot happen for d_max > d_min
            raise RuntimeError(f"could not place atom {len(pos)} of {n} in regime {reg.name}")
        anchor = pos[rng.integers(len(pos))]
        cand = anchor + rng.uniform(reg.d_min, reg.d_max) * _unit_vector(rng)
        if np.min(np.linalg.norm(pos - cand, axis=1)) >= reg.d_min:
            pos = np.vstack([pos, cand])
    pos -= pos.mean(axis=0)
    atoms = Atoms("H" * n, positions=pos)
    atoms.info.update(cluster=cluster_id(reg.name, n, seed), regime=reg.name, seed=int(seed),
                      n_parent=n)
    return atoms


def generate(sizes: Iterable[int], regimes: Iterable[str], count: int | dict[int, int],
             seed: int = 0, split: str = "train") -> list[Atoms]:
    """``count`` clusters per (size, regime) (an int, or ``{size: count}``), with distinct
    seeds ``seed, seed+1, ...``.

    Seeds are assigned regime-major, then size, then index; each cluster's seed is in its id
    (``cluster_id``), so any single cluster can be regenerated with ``random_cluster``.
    """
    out = []
    s = seed
    for reg in regimes:
        for n in sizes:
            for _ in range(count if isinstance(count, int) else count.get(n, 0)):
                atoms = random_cluster(n, reg, s)
                atoms.info["split"] = split
                out.append(atoms)
                s += 1
    return out


def subsets(n: int, which: str = "all") -> list[int]:
    """Bitmasks to label for a parent of ``n`` atoms: ``all`` (1..2^n-1) or ``full`` only."""
    if which == "all":
        return list(range(1, 2**n))
    if which == "full":
        return [2**n - 1]
    raise ValueError(f"unknown subset selection {which!r} (use 'all' or 'full')")


def subcluster(atoms: Atoms, mask: int) -> Atoms:
    """The atoms of ``atoms`` whose bit is set in ``mask`` (bit i = atom i), in order.

    ``info`` keeps the parent's keys and adds ``subset`` (the bitmask).
    """
    n = len(atoms)
    if not 0 < mask < 2**n:
        raise ValueError(f"subset mask {mask} out of range for {n} atoms")
    sub = atoms[lattice.members(mask)]
    sub.info = dict(atoms.info, subset=int(mask))
    return sub


def nearest_neighbour_distances(positions: np.ndarray) -> np.ndarray:
    """Distance (Å) from each atom to its nearest neighbour; ``inf`` for a single atom."""
    pos = np.asarray(positions, dtype=float)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def is_connected(positions: np.ndarray, cutoff: float) -> bool:
    """Whether the graph 'pairs closer than ``cutoff`` Å' is connected."""
    pos = np.asarray(positions, dtype=float)
    n = len(pos)
    adj = np.linalg.norm(pos[:, None] - pos[None], axis=-1) <= cutoff
    seen, stack = {0}, [0]
    while stack:
        i = stack.pop()
        for j in np.flatnonzero(adj[i]):
            if j not in seen:
                seen.add(int(j))
                stack.append(int(j))
    return len(seen) == n


def check_geometry(atoms: Atoms, min_distance: float = 0.3) -> None:
    """Raise ``ValueError`` for non-finite positions or atoms closer than ``min_distance`` Å."""
    pos = atoms.get_positions()
    if not np.all(np.isfinite(pos)):
        raise ValueError("atoms have non-finite (NaN/inf) positions")
    if len(atoms) > 1:
        dmin = float(nearest_neighbour_distances(pos).min())
        if dmin < min_distance:
            raise ValueError(f"overlapping atoms: closest pair {dmin:.3f} Å < {min_distance} Å")
