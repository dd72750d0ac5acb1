"""Reference checks for energy functions: test your own model against jbo's contract.

An energy function here is anything called as ``energy_fn(positions[N,3] Å, species[N],
mask[N]) -> eV`` (a :class:`jbo.potential.Potential`, or a plain function), the energy of the
atoms where ``mask`` is True as if the others did not exist (docs/CONTRACTS.md).

The references are deliberately plain and independent of the engine: subclusters are
*extracted* (``positions[idx]``, the others deleted) and interaction terms come from explicit
inclusion–exclusion loops, ε(S) = Σ_{T⊆S} (−1)^{|S|−|T|} E(T), not from :mod:`jbo.lattice`'s
fast transforms. They cost 2^N evaluations and 3^N additions: keep N ≤ ~10.

    from jbo import potentials, testing
    pos = testing.random_cluster(5, "high", seed=0)
    ref = testing.brute_force_mbe(potentials.morse(), pos)   # ref.per_order [5], ref.terms
    testing.assert_masking_contract(potentials.morse(), pos)
    testing.assert_invariant(potentials.morse(), pos)
    testing.assert_forces_match_finite_differences(potentials.morse(), pos)

Every ``assert_*`` raises ``AssertionError`` naming the atoms or transformation and both
energies, and otherwise returns the largest deviation it saw (eV, or eV/Å for forces).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Mapping

import numpy as np

__all__ = ["BruteForceMBE", "brute_force_mbe", "subcluster_energies", "inclusion_exclusion",
           "brute_force_mobius", "random_cluster", "random_rotations", "finite_difference_forces",
           "assert_masking_contract", "assert_invariant",
           "assert_forces_match_finite_differences"]

Subset = tuple[int, ...]
EnergyFn = Callable[..., object]


def _atoms(positions, species) -> tuple[np.ndarray, np.ndarray]:
    """``(positions[N,3] float64, species[N] int32)``; species default to hydrogen."""
    pos = np.asarray(positions, np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] < 1:
        raise ValueError(f"positions must be [N, 3] with N >= 1 (one cluster), got shape "
                         f"{pos.shape}; check one cluster at a time")
    spec = np.ones(len(pos), np.int32) if species is None else np.asarray(species, np.int32)
    if spec.shape != (len(pos),):
        raise ValueError(f"species must be [N] = [{len(pos)}], got shape {spec.shape}")
    return pos, spec


def _energy(energy_fn: EnergyFn, pos: np.ndarray, spec: np.ndarray, mask=None) -> float:
    mask = np.ones(len(pos), bool) if mask is None else np.asarray(mask, bool)
    return float(np.asarray(energy_fn(pos, spec, mask), np.float64))


# ------------------------------------------------------------------- many-body expansion

@dataclasses.dataclass(frozen=True)
class BruteForceMBE:
    """The many-body expansion of one cluster, by extraction and inclusion–exclusion.

    Attributes:
        per_order: ``[K]`` E^(k) = Σ_{|S|=k} ε(S), k = 1..K (eV).
        terms: ε(S) (eV) of every subset S (sorted atom indices) with 1 ≤ |S| ≤ K.
        energies: E(S) (eV) of every extracted subcluster, ``()`` -> 0.
    """

    per_order: np.ndarray
    terms: dict[Subset, float]
    energies: dict[Subset, float]

    @property
    def total(self) -> float:
        """Σ_k E^(k) (eV): the cluster's energy when K = N."""
        return float(np.sum(self.per_order))


def subcluster_energies(energy_fn: EnergyFn, positions, species=None,
                        max_order: int | None = None) -> dict[Subset, float]:
    """E(S) of every subset with 1 ≤ |S| ≤ ``max_order`` (default N), each evaluated on the
    extracted subcluster ``positions[S]`` (no mask), plus ``() -> 0.0``."""
    pos, spec = _atoms(positions, species)
    n = len(pos)
    top = n if max_order is None else int(max_order)
    if not 1 <= top <= n:
        raise ValueError(f"max_order must be in 1..{n} (the number of atoms), got {max_order}")
    out: dict[Subset, float] = {(): 0.0}
    for k in range(1, top + 1):
        for s in itertools.combinations(range(n), k):
            idx = list(s)
            out[s] = _energy(energy_fn, pos[idx], spec[idx])
    return out


def inclusion_exclusion(energies: Mapping[Subset, float]) -> dict[Subset, float]:
    """ε(S) = Σ_{T⊆S} (−1)^{|S|−|T|} E(T) for every non-empty S in ``energies`` (keys: sorted
    atom-index tuples; E(()) = 0 unless given). Every subset of each S must be present."""
    out: dict[Subset, float] = {}
    for s in energies:
        if not s:
            continue
        total = 0.0
        for k in range(len(s) + 1):
            for t in itertools.combinations(s, k):
                if t not in energies and t:
                    raise ValueError(f"E{t} is missing: the interaction term of {s} needs the "
                                     "energy of every subset of it")
                total += (-1) ** (len(s) - k) * energies.get(t, 0.0)
        out[tuple(s)] = total
    return out


def brute_force_mbe(energy_fn: EnergyFn, positions, species=None, *,
                    max_order: int | None = None) -> BruteForceMBE:
    """Per-order energies ``[K]`` (K = ``max_order``, default N) and interaction terms of one
    cluster: :func:`subcluster_energies` then :func:`inclusion_exclusion`."""
    energies = subcluster_energies(energy_fn, positions, species, max_order)
    terms = inclusion_exclusion(energies)
    top = max(len(s) for s in energies)
    per_order = np.zeros(top)
    for s, eps in terms.items():
        per_order[len(s) - 1] += eps
    return BruteForceMBE(per_order, terms, energies)


def brute_force_mobius(values) -> np.ndarray:
    """Möbius inversion over bitmasks by the definition: ``out[s] = Σ_{t ⊆ s} (−1)^{|s|−|t|}
    values[t]`` along axis 0 (length 2^n; bit i = atom i). O(4^n): the reference for fast
    transforms, not a replacement."""
    x = np.asarray(values, np.float64)
    size = x.shape[0] if x.ndim else 0
    if size < 1 or size & (size - 1):
        raise ValueError(f"axis 0 must have length 2**n, got {size}")
    out = np.zeros_like(x)
    bits = [bin(m).count("1") for m in range(size)]
    for s in range(size):
        for t in range(size):
            if t & s == t:
                out[s] += (-1) ** (bits[s] - bits[t]) * x[t]
    return out


# ------------------------------------------------------------------- geometry

def random_cluster(n: int, regime: str = "high", *, seed: int = 0, d_min: float | None = None,
                   d_max: float | None = None) -> np.ndarray:
    """A random connected cluster ``[n, 3]`` (Å), centred on the origin, reproducible from
    ``seed``: jbo's dataset generator (:func:`jbo.data.clusters.random_cluster`). Every pair is
    ≥ d_min apart and every atom has a neighbour within d_max; ``d_min``/``d_max`` override the
    regime's (``"high"``: 0.7–1.2 Å, ``"low"``: 1.5–2.5 Å)."""
    from jbo.data.clusters import REGIMES, Regime
    from jbo.data.clusters import random_cluster as generate

    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; known: {sorted(REGIMES)}")
    lo = REGIMES[regime].d_min if d_min is None else float(d_min)
    hi = REGIMES[regime].d_max if d_max is None else float(d_max)
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < d_min < d_max (Å), got d_min={lo}, d_max={hi}")
    return np.asarray(generate(int(n), Regime(regime, lo, hi), int(seed)).positions)


def random_rotations(count: int, seed: int = 0) -> np.ndarray:
    """``[count, 3, 3]`` Haar-random proper rotations (det = +1)."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, 3))
    for i in range(count):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        out[i] = q if np.linalg.det(q) > 0 else -q
    return out


# ------------------------------------------------------------------- contract checks

def _subsets(n: int, count: int, rng: np.random.Generator) -> list[Subset]:
    """``count`` distinct random non-empty proper subsets of n atoms (all of them if fewer)."""
    every = (1 << n) - 2
    if every <= count:
        return [tuple(i for i in range(n) if m >> i & 1) for m in range(1, every + 1)]
    picked: set[Subset] = set()
    while len(picked) < count:
        k = int(rng.integers(1, n))
        picked.add(tuple(sorted(rng.choice(n, k, replace=False).tolist())))
    return sorted(picked, key=lambda s: (len(s), s))


def assert_masking_contract(energy_fn: EnergyFn, positions, species=None, *,
                            n_subsets: int = 8, atol: float = 1e-8, padding: bool = True,
                            seed: int = 0) -> float:
    """Masked evaluation equals the extracted subcluster, on ``n_subsets`` random subsets S:
    ``E(positions, species, mask_S) == E(positions[S], species[S])`` within ``atol`` (eV).

    With ``padding``, also with the masked atoms as padding (species 0, on top of a present
    atom), as batches pad them. Returns the largest deviation (eV)."""
    pos, spec = _atoms(positions, species)
    n = len(pos)
    if n < 2 or n_subsets < 1:
        raise ValueError(f"need >= 2 atoms and n_subsets >= 1, got {n} atoms, {n_subsets}")
    worst = 0.0
    for s in _subsets(n, n_subsets, np.random.default_rng(seed)):
        idx = list(s)
        alone = _energy(energy_fn, pos[idx], spec[idx])
        mask = np.isin(np.arange(n), idx)
        cases = [("masked", pos, spec)]
        if padding:
            cases.append(("padded (species 0, on atom %d)" % idx[0],
                          np.where(mask[:, None], pos, pos[idx[0]]), np.where(mask, spec, 0)))
        for label, p, z in cases:
            got = _energy(energy_fn, p, z, mask)
            dev = abs(got - alone)
            if not dev <= atol:
                raise AssertionError(
                    f"masking contract broken for atoms {list(s)} of {n}: {label} gives "
                    f"{got:.12g} eV, the extracted subcluster {alone:.12g} eV (|Δ| = {dev:.3g} "
                    f"> atol {atol:g}); masked atoms must be absent: no edges, no counts, no "
                    "normalisation over them")
            worst = max(worst, dev)
    return worst


def assert_invariant(energy_fn: EnergyFn, positions, species=None, *, rotations=3,
                     translations: int = 2, permutations: int = 2, atol: float = 1e-8,
                     seed: int = 0) -> float:
    """E is unchanged (within ``atol``, eV) by rotations (an int: that many Haar-random ones, or
    ``[R,3,3]`` matrices; about the origin), random translations (≈ 10 Å) and random atom
    permutations (positions and species together). Returns the largest deviation (eV)."""
    pos, spec = _atoms(positions, species)
    rng = np.random.default_rng(seed)
    rot = (random_rotations(int(rotations), seed) if np.ndim(rotations) == 0
           else np.asarray(rotations, np.float64).reshape(-1, 3, 3))
    if not np.allclose(rot @ np.swapaxes(rot, -1, -2), np.eye(3), atol=1e-10):
        raise ValueError("rotations must be orthogonal [R, 3, 3] matrices")
    e0 = _energy(energy_fn, pos, spec)
    cases = [(f"rotation {r.round(4).tolist()}", pos @ r.T, spec) for r in rot]
    for _ in range(translations):
        t = rng.normal(size=3) * 10.0 / np.sqrt(3)
        cases.append((f"translation by {t.round(4).tolist()} Å", pos + t, spec))
    for _ in range(permutations):
        perm = rng.permutation(len(pos))
        cases.append((f"permutation {perm.tolist()}", pos[perm], spec[perm]))
    worst = 0.0
    for label, p, z in cases:
        got = _energy(energy_fn, p, z)
        dev = abs(got - e0)
        if not dev <= atol:
            raise AssertionError(f"not invariant under {label}: {got:.12g} eV, untransformed "
                                 f"{e0:.12g} eV (|Δ| = {dev:.3g} > atol {atol:g})")
        worst = max(worst, dev)
    return worst


def finite_difference_forces(energy: Callable[[np.ndarray], object], positions,
                             h: float = 1e-5) -> np.ndarray:
    """−∂E/∂x by central differences, ``[..., N, 3]`` for ``energy(positions) -> [...]``
    (eV/Å; error O(h²) + O(ε|E|/h))."""
    pos = np.asarray(positions, np.float64)
    out = None
    for i, a in np.ndindex(*pos.shape):
        d = np.zeros_like(pos)
        d[i, a] = h
        up = np.asarray(energy(pos + d), np.float64)
        dn = np.asarray(energy(pos - d), np.float64)
        if out is None:
            out = np.zeros(up.shape + pos.shape)
        out[..., i, a] = -(up - dn) / (2 * h)
    return out


def assert_forces_match_finite_differences(energy_fn: EnergyFn, positions, species=None, *,
                                           forces=None, h: float = 1e-5,
                                           atol: float = 1e-6) -> float:
    """``forces [N,3]`` (eV/Å; default −∂E/∂x by ``jax.grad`` of ``energy_fn``) equal central
    differences of the energy within ``atol``. Pass ``forces`` for a function JAX cannot
    differentiate. Returns the largest deviation (eV/Å)."""
    pos, spec = _atoms(positions, species)
    mask = np.ones(len(pos), bool)
    if forces is None:
        import jax
        import jax.numpy as jnp

        grad = jax.grad(lambda x: jnp.asarray(energy_fn(x, spec, mask), jnp.float64))
        forces = -np.asarray(grad(jnp.asarray(pos)))
    forces = np.asarray(forces, np.float64)
    if forces.shape != pos.shape:
        raise ValueError(f"forces must be [N, 3] = {list(pos.shape)}, got {forces.shape}")
    fd = finite_difference_forces(lambda x: _energy(energy_fn, x, spec, mask), pos, h)
    dev = np.abs(forces - fd)
    i, a = np.unravel_index(int(np.argmax(dev)), dev.shape)
    if not dev[i, a] <= atol:
        raise AssertionError(
            f"forces differ from finite differences (h = {h:g} Å) at atom {i}, axis {'xyz'[a]}: "
            f"{forces[i, a]:.10g} vs {fd[i, a]:.10g} eV/Å (|Δ| = {dev[i, a]:.3g} > atol "
            f"{atol:g})")
    return float(dev.max())
