"""The engine against independent truths: analytic potentials, finite differences, each other."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbo  # noqa: F401  (float64)
from jbo import potentials
from jbo.decompose import body_orders, connected_plan


def cluster(n: int, seed: int, box: float = 3.0, min_dist: float = 0.8) -> np.ndarray:
    """Random positions (Å) with a minimum distance, like a compact H cluster."""
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        p = rng.uniform(0, box, 3)
        if all(np.linalg.norm(p - q) > min_dist for q in pts):
            pts.append(p)
    return np.array(pts)


def morse_pair_np(r, depth=4.75, alpha=1.94, r0=0.74):
    x = np.exp(-alpha * (r - r0))
    return depth * (x * x - 2 * x)


def at_triple_np(a, b, c, c9=1.0):
    """Axilrod-Teller triple energy from three positions, written from the textbook formula."""
    rab, rbc, rca = np.linalg.norm(a - b), np.linalg.norm(b - c), np.linalg.norm(c - a)
    cos_a = np.dot(b - a, c - a) / (rab * rca)
    cos_b = np.dot(a - b, c - b) / (rab * rbc)
    cos_c = np.dot(a - c, b - c) / (rca * rbc)
    return c9 * (1 + 3 * cos_a * cos_b * cos_c) / (rab * rbc * rca) ** 3


def test_pair_potential_has_no_three_body_terms_and_exact_two_body_sum():
    pos = cluster(7, 0)
    r = body_orders(potentials.morse(), pos)
    np.testing.assert_allclose(r.per_order[2:], 0.0, atol=1e-10)
    assert float(r.per_order[0]) == pytest.approx(7 * -13.6, abs=1e-10)
    pairs = sum(morse_pair_np(np.linalg.norm(pos[i] - pos[j])) for i, j in itertools.combinations(range(7), 2))
    assert float(r.per_order[1]) == pytest.approx(pairs, abs=1e-10)
    assert float(r.truncated[-1]) == pytest.approx(float(r.total), abs=1e-10)
    assert float(r.total) == pytest.approx(float(potentials.morse()(pos, None, jnp.ones(7, bool))), abs=1e-12)


def test_axilrod_teller_terms_are_exactly_the_triple_formula():
    pos = cluster(6, 1)
    r = body_orders(potentials.axilrod_teller(c9=2.0), pos)
    np.testing.assert_allclose(r.per_order[3:], 0.0, atol=1e-10)
    np.testing.assert_allclose(r.per_order[:2], 0.0, atol=1e-10)
    terms = np.asarray(r.terms)
    for i, j, k in itertools.combinations(range(6), 3):
        want = at_triple_np(pos[i], pos[j], pos[k], c9=2.0)
        assert terms[(1 << i) | (1 << j) | (1 << k)] == pytest.approx(want, rel=1e-10, abs=1e-12)
    assert r.atoms((1 << 0) | (1 << 4)) == (0, 4)


@pytest.mark.parametrize("seed", [2, 3])
def test_orders_sum_to_total_for_a_genuinely_many_body_energy(seed):
    def many_body(p, s, m):  # exp of a sum: all orders present
        r, pair = potentials.pair_distances(p, m)
        return jnp.exp(-0.3 * jnp.sum(jnp.where(pair, 1.0 / r, 0.0))) * jnp.sum(m)

    r = body_orders(many_body, cluster(8, seed))
    assert abs(float(r.per_order[-1])) > 1e-8  # the 8-body term is really there
    assert float(jnp.sum(r.per_order)) == pytest.approx(float(r.total), abs=1e-10)


def local_potential():
    return potentials.combine(potentials.morse(cutoff=2.0), potentials.axilrod_teller(0.5, cutoff=2.0))


def test_truncated_equals_exhaustive_and_its_own_terms():
    pos = cluster(8, 4)
    fn = local_potential()
    ex = body_orders(fn, pos)
    tr = body_orders(fn, pos, max_order=4)
    np.testing.assert_allclose(tr.per_order, ex.per_order[:4], atol=1e-10)
    np.testing.assert_allclose(tr.total, ex.total, atol=1e-12)
    # closed-form per-order sums == explicit sums of the interaction terms
    explicit = [float(np.sum(np.asarray(tr.terms)[tr.orders == k])) for k in range(1, 5)]
    np.testing.assert_allclose(tr.per_order, explicit, atol=1e-10)
    for j in range(0, len(tr.subsets), 17):
        bitmask = sum(1 << i for i in tr.atoms(j))
        assert float(tr.terms[j]) == pytest.approx(float(ex.terms[bitmask]), abs=1e-10)


def test_connected_equals_exhaustive_for_a_local_potential():
    pos = np.concatenate([cluster(5, 5), cluster(4, 6) + [10.0, 0, 0]])  # two far fragments
    fn = local_potential()
    ex = body_orders(fn, pos)
    co = body_orders(fn, pos, cutoff=2.0)
    np.testing.assert_allclose(co.per_order, ex.per_order, atol=1e-10)
    for j in range(len(co.subsets)):
        bitmask = sum(1 << i for i in co.atoms(j))
        assert float(co.terms[j]) == pytest.approx(float(ex.terms[bitmask]), abs=1e-10)
    # every disconnected subset has exactly zero interaction in the exhaustive run
    connected = {sum(1 << i for i in co.atoms(j)) for j in range(len(co.subsets))}
    others = np.setdiff1d(np.arange(1, 1 << 9), list(connected))
    assert np.abs(np.asarray(ex.terms)[others]).max() < 1e-10
    assert len(co.subsets) < 2**9 // 4
    trunc = body_orders(fn, pos, cutoff=2.0, max_order=3)
    np.testing.assert_allclose(trunc.per_order, ex.per_order[:3], atol=1e-10)


def finite_difference_forces(fn, pos, max_order, h=1e-5, **kw):
    out = np.zeros((max_order,) + pos.shape)
    for i in range(pos.shape[0]):
        for c in range(3):
            d = np.zeros_like(pos)
            d[i, c] = h
            up = body_orders(fn, pos + d, max_order=max_order, **kw).per_order
            dn = body_orders(fn, pos - d, max_order=max_order, **kw).per_order
            out[:, i, c] = -(np.asarray(up) - np.asarray(dn)) / (2 * h)
    return out


@pytest.mark.parametrize("mode", ["exhaustive", "truncated", "connected"])
def test_per_order_forces_match_finite_differences(mode):
    pos = cluster(5, 7, box=2.2)
    fn = local_potential()
    k = 5 if mode == "exhaustive" else 3
    kw = {"cutoff": 2.0} if mode == "connected" else {}
    r = body_orders(fn, pos, max_order=None if mode == "exhaustive" else k, forces=True, **kw)
    assert r.forces.shape == (k, 5, 3)
    fd = finite_difference_forces(fn, pos, k, **kw)
    np.testing.assert_allclose(r.forces, fd, atol=1e-6)
    assert np.abs(np.asarray(r.forces[1])).max() > 1e-2


def test_grad_wrt_parameters_matches_finite_differences():
    pos = cluster(5, 8)

    def third_order(params):  # masks layout: one program to compile per new closure
        fn = potentials.combine(potentials.morse(depth=params[0]), potentials.axilrod_teller(params[1]))
        r = body_orders(fn, pos, layout="masks")
        return r.per_order[1] + 3.0 * r.per_order[2]

    params = jnp.asarray([4.0, 1.5])
    g = jax.grad(third_order)(params)
    h = 1e-4
    for i in range(2):
        e = np.eye(2)[i] * h
        fd = (third_order(params + e) - third_order(params - e)) / (2 * h)
        assert float(g[i]) == pytest.approx(float(fd), rel=1e-6)
    gj = jax.jit(jax.grad(third_order))(params)
    np.testing.assert_allclose(gj, g, rtol=1e-12)


def test_batch_with_padding_equals_single_decompositions():
    fn = local_potential()
    a, b = cluster(5, 9), cluster(4, 10)
    pos = np.zeros((2, 5, 3))
    pos[0], pos[1, :4] = a, b
    mask = np.array([[True] * 5, [True] * 4 + [False]])
    for kw in [{}, {"max_order": 3}, {"cutoff": 2.0, "max_order": 4}]:
        r = body_orders(fn, pos, atom_mask=mask, forces=True, **kw)
        ra, rb = body_orders(fn, a, forces=True, **kw), body_orders(fn, b, forces=True, **kw)
        k = ra.per_order.shape[0]
        np.testing.assert_allclose(r.per_order[0, :k], ra.per_order, atol=1e-10)
        np.testing.assert_allclose(r.per_order[1, : rb.per_order.shape[0]], rb.per_order, atol=1e-10)
        np.testing.assert_allclose(r.per_order[1, 4:], 0.0, atol=1e-10)
        np.testing.assert_allclose(r.total, [ra.total, rb.total], atol=1e-12)
        np.testing.assert_allclose(r.forces[1, : rb.forces.shape[0], :4], rb.forces, atol=1e-10)
        np.testing.assert_allclose(r.forces[1, :, 4:], 0.0, atol=0)


def test_jit_and_connected_plan_under_grad():
    pos = cluster(7, 11)
    fn = local_potential()
    jitted = jax.jit(lambda p: body_orders(fn, p, max_order=3).per_order)
    np.testing.assert_allclose(jitted(pos), body_orders(fn, pos, max_order=3).per_order, atol=1e-12)
    plan = connected_plan(pos, 2.0, 3)
    e2 = lambda p: body_orders(fn, p, cutoff=2.0, max_order=3, plan=plan).per_order[1]  # noqa: E731
    g = jax.jit(jax.grad(e2))(jnp.asarray(pos))
    forces = body_orders(fn, pos, cutoff=2.0, max_order=3, forces=True).forces
    np.testing.assert_allclose(-g, forces[1], atol=1e-10)
    with pytest.raises(ValueError, match="plan=connected_plan"):
        jax.grad(lambda p: body_orders(fn, p, cutoff=2.0, max_order=3).per_order[1])(jnp.asarray(pos))


def test_energy_fn_in_float32_still_decomposes_in_float64():
    fn = potentials.morse()
    fn32 = lambda p, s, m: fn(p.astype(jnp.float32), s, m).astype(jnp.float32)  # noqa: E731
    r = body_orders(fn32, cluster(6, 12))
    assert r.per_order.dtype == jnp.float64 and r.terms.dtype == jnp.float64
    # the Möbius step adds no error of its own: orders sum to the float32 total exactly ...
    assert float(jnp.sum(r.per_order)) == pytest.approx(float(r.total), abs=1e-10)
    # ... but the model's own float32 rounding (~6e-8 x 80 eV per subset energy) shows up as
    # spurious high orders of ~1e-4 eV: why subset energies should come from a float64 model.
    assert 0 < np.abs(np.asarray(r.per_order[2:])).max() < 1e-3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"positions": np.full((3, 3), np.nan)}, "not finite"),
        ({"positions": np.zeros((3, 2))}, "shape \\[N, 3\\]"),
        ({"positions": np.eye(3), "species": np.ones(4, np.int32)}, "species must have shape"),
        ({"positions": np.array([[0, 0, 0], [0, 0, 0.0], [1, 0, 0]])}, "duplicate atoms"),
        ({"positions": np.eye(3), "max_order": 4}, "max_order=4 is outside"),
        ({"positions": np.zeros((0, 3))}, "empty"),
        ({"positions": np.eye(3, dtype=np.int64)}, "floating point"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        body_orders(potentials.morse(), **kwargs)


def test_too_large_exhaustive_says_which_max_order_fits(monkeypatch):
    monkeypatch.setenv("JBO_MEMORY_LIMIT", str(2**18))
    pos = cluster(14, 13, box=6.0)
    with pytest.raises(MemoryError, match="max_order=\\d+ fits"):
        body_orders(potentials.morse(), pos)


def test_connected_mode_refuses_non_local_or_short_cutoff():
    pos = cluster(4, 14)
    with pytest.raises(ValueError, match="is_local=False"):
        body_orders(potentials.morse(), pos, cutoff=2.0)
    with pytest.raises(ValueError, match="smaller than the model's own cutoff"):
        body_orders(potentials.morse(cutoff=3.0), pos, cutoff=2.0)


def test_exhaustive_layouts_agree():
    fn = local_potential()
    pos = np.stack([cluster(5, 15), cluster(5, 16)])
    mask = np.array([[True] * 5, [True] * 3 + [False] * 2])
    a = body_orders(fn, pos, atom_mask=mask, forces=True, layout="compact")
    b = body_orders(fn, pos, atom_mask=mask, forces=True, layout="masks")
    for x, y in [(a.per_order, b.per_order), (a.terms, b.terms), (a.forces, b.forces)]:
        np.testing.assert_allclose(x, y, atol=1e-10)
    with pytest.raises(ValueError, match="layout must be one of"):
        body_orders(fn, pos[0], layout="dense")
