"""The body-order regularizer: penalize interaction terms above order K, differentiably.

For a cluster of n atoms with interaction terms ε(S) = Σ_{T⊆S} (−1)^{|S|−|T|} E(T)
(``jbo.decompose``), two penalties, both per atom and in units of the energy scale s:

* ``terms``:      P = Σ_{k>K} w_k Σ_{|S|=k} ε(S)² / (n s²)
* ``truncation``: P = ((E − E_MBE(K)) / (n s))²,  E_MBE(K) = Σ_{|S|≤K} ε(S)

Exact mode evaluates the whole subset lattice (2^n energies; H_4..H_8 training clusters need
at most 256), through the engine's batched exhaustive decomposition, in its compact layout
(``backend="engine"``: per-size gathers, fastest per step) or its N-wide mask layout
(``backend="masks"``: the same numbers, 2-4x slower per step but 3-10x faster to compile,
which wins for short runs). Measured cost (``benchmarks/train.py``, SOAP-BPNN, 16-structure
batch, 4 H_8 clusters in the penalty, 2-core CPU): ``terms`` 14-15x a plain step with the
compact layout (``RegularizerConfig.every = 7`` amortizes it to <= 3x), ``truncation``
2.5-3x.

For larger clusters the ``terms`` penalty is *estimated*: for each order k = K+1..k_max draw m subsets S_1..S_m
independently and uniformly among the C(n, k) subsets of size k, and use

    Σ̂_k = C(n, k) · (1/m) Σ_j ε(S_j)²,    E[Σ̂_k] = Σ_{|S|=k} ε(S)²   (unbiased),

each ε(S_j) computed exactly from the 2^k subsets of S_j. Gradients are unbiased too (the
estimator is linear in the sampled ε²). Orders above k_max are not penalized. The truncation
penalty never needs sampling: the engine's ``max_order=K`` mode gives E_MBE(K) exactly from the
1 + Σ_{k≤K} C(n, k) subsets of size ≤ K (cheap at any n). Energies and alternating sums are in
float64 whatever the model dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import comb

import jax
import jax.numpy as jnp
import numpy as np

from jbo import lattice
from jbo.decompose import body_orders

__all__ = ["exhaustive_terms", "order_weights", "penalty_from_terms", "exact_penalty",
           "sampled_terms_penalty", "truncation_penalty", "body_order_penalty"]

EnergyFn = Callable[..., jnp.ndarray]


BACKENDS = ("engine", "masks")


def exhaustive_terms(energy_fn: EnergyFn, positions, species, mask, backend: str = "engine"
                     ) -> jnp.ndarray:
    """Interaction terms ``[B, 2^N]`` (eV, indexed by bitmask) of a padded batch ``[B, N]``
    from the engine's batched exhaustive decomposition (float64, differentiable; zero on
    subsets holding padding atoms). ``backend``: ``"engine"`` = compact layout, ``"masks"`` =
    the engine's N-wide mask layout."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    layout = "compact" if backend == "engine" else "masks"
    res = body_orders(energy_fn, positions, species, atom_mask=mask, layout=layout)
    return jnp.asarray(res.terms, jnp.float64)


def order_weights(n: int, order: int, weights: Sequence[float] = ()) -> np.ndarray:
    """w_k for k = 0..n: 0 for k ≤ K, ``weights[k-K-1]`` (default 1) above."""
    w = np.zeros(n + 1)
    for k in range(order + 1, n + 1):
        j = k - order - 1
        w[k] = weights[j] if j < len(weights) else 1.0
    return w


def penalty_from_terms(terms, mask, *, order: int, mode: str = "terms",
                       weights: Sequence[float] = (), scale: float = 1.0) -> jnp.ndarray:
    """Penalty per cluster ``[B]`` from lattice-indexed terms ``[B, 2^N]`` (eV) and ``mask``."""
    n_max = mask.shape[-1]
    pc = lattice.popcount(np.arange(1 << n_max))
    n = jnp.maximum(jnp.sum(mask, -1), 1)
    if mode == "terms":
        w = order_weights(n_max, order, weights)[pc]  # [2^N]
        return jnp.sum(jnp.asarray(w) * terms**2, -1) / (n * scale**2)
    if mode != "truncation":
        raise ValueError(f"mode must be 'terms' or 'truncation', got {mode!r}")
    high = jnp.asarray(pc > order, jnp.float64)
    return (jnp.sum(high * terms, -1) / (n * scale)) ** 2


def exact_penalty(energy_fn: EnergyFn, positions, species, mask, *, order: int,
                  mode: str = "terms", weights: Sequence[float] = (), scale: float = 1.0,
                  backend: str = "engine") -> jnp.ndarray:
    """Exact penalty per cluster ``[B]`` from the full lattice (see module docstring)."""
    terms = exhaustive_terms(energy_fn, positions, species, mask, backend)  # [B, 2^N]
    return penalty_from_terms(terms, mask, order=order, mode=mode, weights=weights, scale=scale)


def _sample_subsets(key, mask, k: int, m: int) -> jnp.ndarray:
    """``[B, m, k]`` atom indices: m independent uniform k-subsets of the valid atoms of each
    cluster (Gumbel top-k; padding atoms only appear when a cluster has fewer than k atoms)."""
    b, n = mask.shape
    g = jax.random.gumbel(key, (b, m, n))
    g = jnp.where(mask[:, None, :], g, -jnp.inf)
    return jax.lax.top_k(g, k)[1]


def sampled_terms_penalty(energy_fn: EnergyFn, positions, species, mask, key, *, order: int,
                          max_order: int, samples: int, weights: Sequence[float] = (),
                          scale: float = 1.0, backend: str = "engine") -> jnp.ndarray:
    """Unbiased estimate ``[B]`` of the ``terms`` penalty for orders K+1..max_order.

    Cost: ``B * samples * Σ_k 2^k`` energy evaluations of k-atom subsets.
    """
    n_atoms = jnp.sum(mask, -1)
    n_max = positions.shape[-2]
    total = jnp.zeros(positions.shape[0], jnp.float64)
    top = min(max_order, n_max)
    w = order_weights(top, order, weights)
    binom = np.array([[comb(nn, k) for k in range(top + 1)] for nn in range(n_max + 1)], float)
    for k in range(order + 1, top + 1):
        key, sub = jax.random.split(key)
        idx = _sample_subsets(sub, mask, k, samples)  # [B, m, k]
        pos = jnp.take_along_axis(positions[:, None], idx[..., None], axis=2)
        sp = jnp.take_along_axis(species[:, None], idx, axis=2)
        valid = jnp.take_along_axis(mask[:, None], idx, axis=2)
        flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
        terms = exhaustive_terms(energy_fn, flat(pos), flat(sp), flat(valid), backend)
        eps = terms[:, -1].reshape(idx.shape[:2])  # ε(S_j): the full set of each sample
        count = jnp.asarray(binom[:, k])[n_atoms]  # C(n_b, k), 0 when n_b < k
        total = total + w[k] * count * jnp.mean(eps**2, -1)
    return total / (jnp.maximum(n_atoms, 1) * scale**2)


def truncation_penalty(energy_fn: EnergyFn, positions, species, mask, *, order: int,
                       scale: float = 1.0) -> jnp.ndarray:
    """Exact ((E − E_MBE(K)) / (n s))² per cluster ``[B]`` from subsets of size ≤ K only."""
    res = body_orders(energy_fn, positions, species, max_order=order, atom_mask=mask,
                      terms=False)
    n = jnp.maximum(jnp.sum(mask, -1), 1)
    gap = jnp.asarray(res.total, jnp.float64) - jnp.asarray(res.truncated, jnp.float64)[..., -1]
    return (gap / (n * scale)) ** 2


def body_order_penalty(energy_fn: EnergyFn, positions, species, mask, key=None, *, order: int,
                       mode: str = "terms", weights: Sequence[float] = (), scale: float = 1.0,
                       exact_max_atoms: int = 10, samples: int = 4, max_order: int = 6,
                       backend: str = "engine") -> jnp.ndarray:
    """Penalty per cluster ``[B]`` (dimensionless; average it with the batch weights).

    ``truncation`` mode: always exact via the engine's truncated expansion. ``terms`` mode:
    exact when the padded size N ≤ ``exact_max_atoms``, else :func:`sampled_terms_penalty`
    (needs ``key``).
    """
    n_max = positions.shape[-2]
    if mode == "truncation":
        return truncation_penalty(energy_fn, positions, species, mask, order=min(order, n_max),
                                  scale=scale)
    if mode != "terms":
        raise ValueError(f"mode must be 'terms' or 'truncation', got {mode!r}")
    if n_max <= exact_max_atoms:
        return exact_penalty(energy_fn, positions, species, mask, order=order, weights=weights,
                             scale=scale, backend=backend)
    if key is None:
        raise ValueError(f"clusters of {n_max} > exact_max_atoms={exact_max_atoms} atoms need "
                         "a PRNG key for the stochastic estimate; pass key=")
    return sampled_terms_penalty(energy_fn, positions, species, mask, key, order=order,
                                 max_order=max_order, samples=samples, weights=weights,
                                 scale=scale, backend=backend)
