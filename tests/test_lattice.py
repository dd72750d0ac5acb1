"""The subset lattice on its own: transforms, enumerations and operators vs brute force."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

import jbo  # noqa: F401  (float64)
from jbo import lattice, testing


brute_mobius = testing.brute_force_mobius  # ε by the definition, O(4^n)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_zeta_mobius_round_trip(n):
    x = np.random.default_rng(n).normal(size=1 << n)
    np.testing.assert_allclose(lattice.zeta(lattice.mobius(jnp.asarray(x))), x, atol=1e-12)
    np.testing.assert_allclose(lattice.mobius(lattice.zeta(jnp.asarray(x))), x, atol=1e-12)


def test_mobius_matches_definition_and_transforms_trailing_axes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 4, 3))
    got = np.asarray(lattice.mobius(jnp.asarray(x), axis=0))
    for a in range(4):
        for c in range(3):
            np.testing.assert_allclose(got[:, a, c], brute_mobius(x[:, a, c]), atol=1e-12)
    got1 = np.asarray(lattice.mobius(jnp.asarray(x.transpose(1, 0, 2)), axis=1))
    np.testing.assert_allclose(got1, got.transpose(1, 0, 2), atol=1e-12)


def test_mobius_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="2\\*\\*n"):
        lattice.mobius(jnp.zeros(6))


def test_popcount_and_order_sums():
    masks = np.arange(1 << 10)
    assert (lattice.popcount(masks) == [bin(m).count("1") for m in masks]).all()
    assert int(lattice.popcount(jnp.asarray([2**40 + 7]))[0]) == 4
    x = np.random.default_rng(2).normal(size=1 << 6)
    sums = np.asarray(lattice.order_sums(jnp.asarray(x), 6))
    for k in range(1, 7):
        assert sums[k - 1] == pytest.approx(x[[bin(m).count("1") == k for m in range(64)]].sum())


@pytest.mark.parametrize("n,k", [(1, 1), (5, 2), (7, 4), (6, 6)])
def test_combinations_up_to(n, k):
    idx = lattice.combinations_up_to(n, k)
    want = [c for j in range(1, k + 1) for c in itertools.combinations(range(n), j)]
    got = [tuple(int(i) for i in row if i >= 0) for row in idx]
    assert got == want
    assert len(idx) == lattice.n_subsets_up_to(n, k)


def _is_connected(members, adj) -> bool:
    members = list(members)
    seen, todo = {members[0]}, [members[0]]
    while todo:
        i = todo.pop()
        for j in members:
            if adj[i, j] and j not in seen:
                seen.add(j)
                todo.append(j)
    return len(seen) == len(members)


def random_graph(n: int, p: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.triu(rng.random((n, n)) < p, 1)
    return a | a.T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_connected_subsets_match_brute_force(seed):
    n, k = 9, 4
    adj = random_graph(n, 0.35, seed)
    got = {tuple(int(i) for i in row if i >= 0) for row in lattice.connected_subsets(adj, k)}
    want = {
        c
        for j in range(1, k + 1)
        for c in itertools.combinations(range(n), j)
        if _is_connected(c, adj)
    }
    assert got == want
    assert len(lattice.connected_subsets(adj, k)) == len(want)  # no duplicates


def test_connected_subsets_budget():
    adj = ~np.eye(12, dtype=bool)
    with pytest.raises(MemoryError, match="lower max_order"):
        lattice.connected_subsets(adj, 5, max_subsets=100)


@pytest.mark.parametrize("seed", [3, 4])
def test_local_operator_inverts_zeta_of_local_terms(seed):
    """ε supported on connected sets -> E = zeta(ε) on the whole lattice -> operator recovers ε."""
    n, k = 8, 4
    adj = random_graph(n, 0.4, seed)
    rng = np.random.default_rng(seed)
    eps_full = np.zeros(1 << n)
    for s in range(1, 1 << n):
        members = [i for i in range(n) if s >> i & 1]
        if len(members) <= k and _is_connected(members, adj):
            eps_full[s] = rng.normal()
    energy_full = np.asarray(lattice.zeta(jnp.asarray(eps_full)))
    idx = lattice.connected_subsets(adj, k)
    bitmask = [sum(1 << int(i) for i in row if i >= 0) for row in idx]
    rows, cols, coef = lattice.local_mobius_operator(idx, n, adj)
    eps = np.zeros(len(idx))
    np.add.at(eps, rows, coef * energy_full[bitmask][cols])
    np.testing.assert_allclose(eps, eps_full[bitmask], atol=1e-12)


def test_complete_graph_operator_is_plain_mobius():
    n, k = 6, 3
    idx = lattice.combinations_up_to(n, k)
    x = np.random.default_rng(5).normal(size=1 << n)
    x[0] = 0
    bitmask = [sum(1 << int(i) for i in row if i >= 0) for row in idx]
    rows, cols, coef = lattice.local_mobius_operator(idx, n)
    eps = np.zeros(len(idx))
    np.add.at(eps, rows, coef * x[bitmask][cols])
    np.testing.assert_allclose(eps, brute_mobius(x)[bitmask], atol=1e-12)


@pytest.mark.parametrize("n,k", [(5, 2), (8, 3), (8, 8), (10, 4)])
def test_closed_form_order_weights_equal_explicit_sum(n, k):
    x = np.random.default_rng(n * k).normal(size=1 << n)
    x[0] = 0
    eps = brute_mobius(x) if n <= 8 else np.asarray(lattice.mobius(jnp.asarray(x)))
    sizes = np.array([bin(m).count("1") for m in range(1 << n)])
    keep = (sizes >= 1) & (sizes <= k)
    weights = np.asarray(lattice.order_weights(n, sizes[keep], k))
    per_order = x[keep] @ weights
    explicit = np.array([eps[sizes == kk].sum() for kk in range(1, k + 1)])
    np.testing.assert_allclose(per_order, explicit, atol=1e-9)
    if k < n:  # classic truncated-MBE coefficients (-1)^{K-j} C(n-j-1, K-j)
        from math import comb

        coef = np.array([(-1) ** (k - j) * comb(n - j - 1, k - j) for j in sizes[keep]])
        assert per_order.sum() == pytest.approx(coef @ x[keep], abs=1e-9)
