"""The body-order regularizer: explicit values, gradients, the unbiased stochastic estimator."""

from __future__ import annotations

from itertools import combinations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jbo.models import Model
from jbo.train.losses import cast_tree
from jbo.train.regularizers import (body_order_penalty, exact_penalty, exhaustive_terms,
                                    penalty_from_terms, truncation_penalty)
from tests.toy import ToyEAM, reference_energy, toy_cluster

SCALE = 0.7


def _setup(sizes=(4, 5), seed=0):
    n_max = max(sizes)
    pos = np.zeros((len(sizes), n_max, 3))
    mask = np.zeros((len(sizes), n_max), bool)
    for b, n in enumerate(sizes):
        pos[b, :n], mask[b, :n] = toy_cluster(n, 10 + b + seed), True
        pos[b, n:] = 50.0 + np.arange(n_max - n)[:, None]  # padding: far, distinct, masked
    species = np.where(mask, 1, 0).astype(np.int32)
    module = ToyEAM()
    params = module.init(jax.random.PRNGKey(seed), jnp.asarray(pos[0]), jnp.asarray(species[0]),
                         jnp.asarray(mask[0]))
    params = cast_tree(params, jnp.float64)
    model = Model(module, params, baseline={1: -13.6}, scale=SCALE)
    return model, params, jnp.asarray(pos), jnp.asarray(species), jnp.asarray(mask)


def _explicit_terms(model, params, pos, species, n):
    """ε(S) for every non-empty S ⊆ {0..n-1} by explicit inclusion–exclusion (no lattice code)."""
    efn = jax.jit(model.replace(params=params).potential)
    energy = {}
    for k in range(1, n + 1):
        for s in combinations(range(n), k):
            m = np.zeros(pos.shape[0], bool)
            m[list(s)] = True
            energy[s] = float(efn(pos, species, jnp.asarray(m)))
    eps = {}
    for s in energy:
        eps[s] = sum((-1) ** (len(s) - len(t)) * energy[t]
                     for k in range(1, len(s) + 1) for t in combinations(s, k))
    return eps, energy


def test_exact_penalty_equals_explicit_sum():
    model, params, pos, species, mask = _setup()
    efn = model.replace(params=params).potential
    weights = (1.0, 0.5, 2.0)
    terms = exhaustive_terms(efn, pos, species, mask, backend="masks")
    explicit = [_explicit_terms(model, params, pos[b], species[b], int(mask[b].sum()))
                for b in range(pos.shape[0])]
    for order in (1, 2, 3):
        got_terms = penalty_from_terms(terms, mask, order=order, weights=weights, scale=SCALE)
        got_trunc = penalty_from_terms(terms, mask, order=order, mode="truncation", scale=SCALE)
        for b, (eps, energy) in enumerate(explicit):
            n = int(mask[b].sum())
            w = {k: (weights[k - order - 1] if k - order - 1 < len(weights) else 1.0)
                 for k in range(order + 1, n + 1)}
            want = sum(w[len(s)] * e**2 for s, e in eps.items() if len(s) > order)
            np.testing.assert_allclose(got_terms[b], want / (n * SCALE**2), rtol=1e-9)
            gap = energy[tuple(range(n))] - sum(e for s, e in eps.items() if len(s) <= order)
            np.testing.assert_allclose(got_trunc[b], (gap / (n * SCALE)) ** 2, rtol=1e-8)
    # the compact layout (backend="engine") gives the same lattice
    np.testing.assert_allclose(exhaustive_terms(efn, pos, species, mask), terms,
                               rtol=1e-9, atol=1e-12)
    # end to end, and the large-cluster truncation path (engine's max_order=K mode)
    np.testing.assert_allclose(exact_penalty(efn, pos, species, mask, order=2, scale=SCALE,
                                             backend="masks"),
                               penalty_from_terms(terms, mask, order=2, scale=SCALE), rtol=1e-12)
    np.testing.assert_allclose(truncation_penalty(efn, pos, species, mask, order=2, scale=SCALE),
                               penalty_from_terms(terms, mask, order=2, mode="truncation",
                                                  scale=SCALE), rtol=1e-8)


def test_penalty_gradient_matches_finite_differences():
    model, params, pos, species, mask = _setup()

    @jax.jit
    def f(p):
        efn = model.replace(params=p).potential
        return (jnp.mean(body_order_penalty(efn, pos, species, mask, order=2, scale=SCALE,
                                            backend="masks"))
                + jnp.mean(body_order_penalty(efn, pos, species, mask, order=3,
                                              mode="truncation", scale=SCALE)))

    grad = jax.jit(jax.grad(f))(params)
    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(0)
    direction = tree.unflatten([rng.normal(size=np.shape(x)) for x in leaves])
    h = 1e-5
    shifted = [jax.tree_util.tree_map(lambda x, d, s=s: x + s * h * d, params, direction)
               for s in (1.0, -1.0)]
    fd = (f(shifted[0]) - f(shifted[1])) / (2 * h)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grad),
                                                  jax.tree_util.tree_leaves(direction)))
    assert abs(float(f(params))) > 0
    np.testing.assert_allclose(float(analytic), float(fd), rtol=1e-6)


def test_stochastic_estimator_is_unbiased():
    """E[C(n,k) mean_j ε(S_j)²] = Σ_{|S|=k} ε(S)²: the average of many independent estimates
    matches the exact value within 4 standard errors (orders 3..5; a 4-atom cluster in the
    batch has no 5-subsets and must contribute 0 there)."""
    model, params, pos, species, mask = _setup(sizes=(6, 4, 7), seed=3)
    efn = model.replace(params=params).potential
    weights = (1.0, 1.0, 1.0, 0.0, 0.0)  # orders 3, 4, 5 only
    exact = exact_penalty(efn, pos, species, mask, order=2, weights=weights, scale=SCALE,
                          backend="masks")

    @jax.jit
    def estimate(key):  # dispatches to the sampled estimator: clusters > exact_max_atoms
        return body_order_penalty(efn, pos, species, mask, key, order=2, exact_max_atoms=3,
                                  max_order=5, samples=2, scale=SCALE, backend="masks")
    keys = jax.random.split(jax.random.PRNGKey(42), 400)
    est = np.asarray(jax.lax.map(estimate, keys))  # [400, B]
    mean, sem = est.mean(0), est.std(0) / np.sqrt(len(est))
    assert np.all(est.std(0) > 0)  # really random
    np.testing.assert_array_less(np.abs(mean - exact), 4 * sem + 1e-12)
    with pytest.raises(ValueError, match="PRNG key"):
        body_order_penalty(efn, pos, species, mask, None, order=2, exact_max_atoms=3)


def test_subset_energies_are_float64_when_training_float32():
    """A float32 zoo model is evaluated by its float64 twin in the energy_fn the regularizer
    (and the engine) sees: same parameters, float64 arithmetic."""
    from jbo import models
    from jbo.train.losses import structure_energy

    module = models.create("soap_bpnn", max_radial=3, max_angular=2, hidden=(8,),
                           dtype="float32")
    _, _, pos, species, mask = _setup(sizes=(4,))
    params = models.init(module, jax.random.PRNGKey(0))
    m32 = Model.of(module, params, {1: -13.6}, SCALE)
    assert m32.dtype == "float32"
    assert m32.potential.apply.static == (("dtype", "float64"),
                                          ("module", module.clone(dtype="float64")))
    m64 = Model.of(module.clone(dtype="float64"), cast_tree(params, jnp.float64), {1: -13.6},
                   SCALE)
    args = (pos[0], species[0], mask[0])
    e_reg = jax.jit(m32.potential)(*args)
    e_64 = jax.jit(m64.potential)(*args)
    e_32 = jax.jit(lambda *a: structure_energy(m32, *a))(*args)  # training dtype
    assert e_reg.dtype == jnp.float64
    assert float(e_reg) == float(e_64)
    assert abs(float(e_32) - float(e_64)) < 1e-3  # same model, float32 rounding


def test_reference_is_many_body():
    """The stand-in reference really has 3- and 4-body terms (else the regularizer is moot)."""
    from jbo import lattice
    pos = toy_cluster(4, 1)
    e = np.array([reference_energy(pos, [(s >> i) & 1 for i in range(4)]) if s else 0.0
                  for s in range(16)])
    eps = np.asarray(lattice.mobius(jnp.asarray(e)))
    pc = lattice.popcount(np.arange(16))
    assert np.abs(eps[pc == 3]).max() > 1e-3 and abs(eps[15]) > 1e-5
