"""Property-based tests of the engine's identities on random clusters and random potentials."""

import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jbo  # noqa: F401
from jbo import lattice, potentials
from jbo.decompose import body_orders

SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def clusters(draw, min_atoms=2, max_atoms=6):
    n = draw(st.integers(min_atoms, max_atoms))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:  # random cluster with a 0.7 Å minimum distance
        p = rng.uniform(0, 1.2 * n ** (1 / 3) + 1.0, 3)
        if all(np.linalg.norm(p - q) > 0.7 for q in pts):
            pts.append(p)
    return np.array(pts)


@st.composite
def local_potentials(draw):
    """A random local potential: Morse and Axilrod-Teller parts with random strengths."""
    cutoff = draw(st.floats(1.5, 3.0))
    depth = draw(st.floats(0.5, 5.0))
    c9 = draw(st.floats(-2.0, 2.0))
    many = draw(st.floats(0.0, 0.5))

    return potentials.combine(
        potentials.morse(depth=depth, cutoff=cutoff),
        potentials.axilrod_teller(c9, cutoff=cutoff),
        potentials.embedded_atom(many, cutoff=cutoff),  # genuinely many-body: every order
    )


@SETTINGS
@given(clusters(), local_potentials())
def test_orders_sum_to_the_total(pos, fn):
    r = body_orders(fn, pos)
    assert abs(float(jnp.sum(r.per_order) - r.total)) < 1e-9 * max(1.0, abs(float(r.total)))


@SETTINGS
@given(st.integers(1, 10), st.integers(0, 2**31 - 1))
def test_mobius_zeta_round_trip(n, seed):
    x = np.random.default_rng(seed).normal(size=(1 << n, 2))
    np.testing.assert_allclose(lattice.zeta(lattice.mobius(jnp.asarray(x))), x, atol=1e-10)


@SETTINGS
@given(clusters(3, 6), local_potentials(), st.randoms(use_true_random=False))
def test_permuting_atoms_permutes_terms(pos, fn, rnd):
    n = len(pos)
    perm = list(range(n))
    rnd.shuffle(perm)
    a = body_orders(fn, pos)
    b = body_orders(fn, pos[perm])
    np.testing.assert_allclose(a.per_order, b.per_order, atol=1e-9)
    # subset S of the permuted cluster is the subset {perm[i] : i in S} of the original
    masks = np.arange(1 << n)
    original = np.zeros_like(masks)
    for i, p in enumerate(perm):
        original |= ((masks >> i) & 1) << p
    np.testing.assert_allclose(np.asarray(b.terms), np.asarray(a.terms)[original], atol=1e-9)


@SETTINGS
@given(clusters(3, 7), local_potentials(), st.integers(1, 4))
def test_connected_mode_equals_exhaustive_for_local_potentials(pos, fn, k):
    k = min(k, len(pos))
    ex = body_orders(fn, pos)
    co = body_orders(fn, pos, cutoff=fn.cutoff, max_order=k)
    np.testing.assert_allclose(co.per_order, ex.per_order[:k], atol=1e-9)
