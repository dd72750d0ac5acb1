"""Analytic potentials (each a :class:`jbo.potential.Potential`); independent truths for tests.

Each factory returns a Potential ``(positions[N,3], species[N], mask[N]) -> scalar`` (eV) whose
constants are its parameters (leaves) and whose ``cutoff`` (Å, or None when infinite-ranged)
and ``is_local`` are static. Masked atoms are absent. Their many-body expansions are known
exactly: a pair potential has ε(S) = 0 for |S| >= 3; the Axilrod–Teller term has ε(S) = 0 for
|S| >= 4 and ε({i,j,k}) = its triple energy. ``combine`` (sums) is :func:`jbo.potential.combine`.

Foreign models (any ASE calculator, batched PyTorch models) are re-exported here from
:mod:`jbo.adapters`: ``from_ase(calculator)``, ``from_torch(model)``.
"""

from __future__ import annotations

import jax.numpy as jnp

from jbo import geometry
from jbo.adapters import from_ase, from_torch  # noqa: F401  (host-evaluated potentials)
from jbo.potential import Bound, Potential, combine, contract_tested

__all__ = ["morse", "lennard_jones", "axilrod_teller", "embedded_atom", "combine", "switch",
           "pair_distances", "axilrod_teller_triple", "from_ase", "from_torch"]

Array = jnp.ndarray


def _analytic(fn, cutoff: float | None, **params) -> Potential:
    """``fn(params, positions, species, mask, cutoff=)``: constants as leaves, cutoff static."""
    cutoff = geometry.check_cutoff(cutoff, "cutoff")
    return Potential(Bound.of(fn, cutoff=cutoff), params,
                     cutoff=cutoff, is_local=cutoff is not None, receptive_field=cutoff)


def switch(r: Array, cutoff: float | None) -> Array:
    """Smooth cosine switch: 1 at r = 0, 0 (with zero slope) at r >= cutoff; 1 if None."""
    if cutoff is None:
        return jnp.ones_like(r)
    return jnp.where(r < cutoff, 0.5 * (jnp.cos(jnp.pi * jnp.minimum(r, cutoff) / cutoff) + 1), 0.0)


def pair_distances(positions: Array, mask: Array) -> tuple[Array, Array]:
    """Distances ``[N, N]`` (Å) safe to differentiate, and the pair mask (both present, i != j).

    Absent pairs get a dummy distance of 1 so that neither values nor gradients become NaN.
    """
    n = positions.shape[0]
    pair = mask[:, None] & mask[None, :] & ~jnp.eye(n, dtype=bool)
    diff = positions[:, None, :] - positions[None, :, :]
    d2 = jnp.where(pair, jnp.sum(diff**2, -1), 1.0)
    return jnp.sqrt(d2), pair


@contract_tested
def _morse(params, positions, species, mask, *, cutoff):
    r, pair = pair_distances(positions, mask)
    x = jnp.exp(-params["alpha"] * (r - params["r0"]))
    e = params["depth"] * (x * x - 2 * x) * switch(r, cutoff)
    return 0.5 * jnp.sum(jnp.where(pair, e, 0.0)) + params["atom_energy"] * jnp.sum(mask)


def morse(
    depth: float = 4.75, alpha: float = 1.94, r0: float = 0.74, cutoff: float | None = None,
    atom_energy: float = -13.6,
) -> Potential:
    """Morse pair potential (defaults loosely H2-like: eV, 1/Å, Å) plus a 1-body energy."""
    return _analytic(_morse, cutoff, depth=depth, alpha=alpha, r0=r0, atom_energy=atom_energy)


@contract_tested
def _lennard_jones(params, positions, species, mask, *, cutoff):
    r, pair = pair_distances(positions, mask)
    s6 = (params["sigma"] / r) ** 6
    e = 4 * params["epsilon"] * (s6 * s6 - s6) * switch(r, cutoff)
    return 0.5 * jnp.sum(jnp.where(pair, e, 0.0))


def lennard_jones(epsilon: float = 1.0, sigma: float = 1.0, cutoff: float | None = None
                  ) -> Potential:
    """Lennard-Jones pair potential (eV, Å), optionally smoothly switched off at ``cutoff``."""
    return _analytic(_lennard_jones, cutoff, epsilon=epsilon, sigma=sigma)


def axilrod_teller_triple(ri: Array, rj: Array, rk: Array, c9: float) -> Array:
    """Triple-dipole energy of one triple of positions ``[..., 3]`` (eV)."""
    a, b, c = rj - ri, rk - rj, ri - rk
    la, lb, lc = (jnp.linalg.norm(v, axis=-1) for v in (a, b, c))
    cos_i = -jnp.sum(c * a, -1) / (lc * la)
    cos_j = -jnp.sum(a * b, -1) / (la * lb)
    cos_k = -jnp.sum(b * c, -1) / (lb * lc)
    return c9 * (1 + 3 * cos_i * cos_j * cos_k) / (la * lb * lc) ** 3


@contract_tested
def _axilrod_teller(params, positions, species, mask, *, cutoff):
    r, pair = pair_distances(positions, mask)
    sw = jnp.where(pair, switch(r, cutoff), 0.0)
    triple = pair[:, :, None] & pair[:, None, :] & pair[None, :, :]
    # safe vectors: absent triples get an equilateral dummy
    eq = jnp.asarray([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.866, 0.0]])
    pi = jnp.where(triple[..., None], positions[:, None, None, :], eq[0])
    pj = jnp.where(triple[..., None], positions[None, :, None, :], eq[1])
    pk = jnp.where(triple[..., None], positions[None, None, :, :], eq[2])
    e = axilrod_teller_triple(pi, pj, pk, params["c9"])
    weight = sw[:, :, None] * sw[:, None, :] * sw[None, :, :]
    return jnp.sum(jnp.where(triple, e * weight, 0.0)) / 6.0


def axilrod_teller(c9: float = 1.0, cutoff: float | None = None) -> Potential:
    """Axilrod–Teller–Muto triple-dipole energy Σ_{i<j<k} (switched by each pair's distance)."""
    return _analytic(_axilrod_teller, cutoff, c9=c9)


@contract_tested
def _embedded_atom(params, positions, species, mask, *, cutoff):
    r, pair = pair_distances(positions, mask)
    rho = jnp.sum(jnp.where(pair, switch(r, cutoff), 0.0), axis=1)
    return -params["strength"] * jnp.sum(jnp.where(mask, jnp.sqrt(1.0 + rho) - 1.0, 0.0))


def embedded_atom(strength: float = 1.0, cutoff: float = 2.5) -> Potential:
    """An EAM-like many-body term Σ_i −A (sqrt(1 + ρ_i) − 1), ρ_i = Σ_j switch(r_ij).

    Local and O(N²), zero for an isolated atom, with interaction terms at every order (the
    square root couples all neighbours of an atom): a cheap stand-in for a neural potential.
    """
    return _analytic(_embedded_atom, cutoff, strength=strength)
