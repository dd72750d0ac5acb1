"""The model zoo's contract, checked against independent truths for every model.

Small hyperparameters keep compile times low; each model's jitted functions are built once
per module (fixture ``zoo``) and reused, so every test only pays for the shapes it adds.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import jbo  # noqa: F401  (float64)
import jax
import jax.numpy as jnp
from jbo import models, testing
from jbo.decompose import body_orders

CUTOFF = 3.0
SPECIES = (1, 8)
SMALL = {
    "soap_bpnn": dict(max_radial=4, max_angular=3, hidden=(16, 16)),
    "linear_ace": dict(correlation=2, max_radial=3, max_angular=2),
    "pet": dict(d_model=16, num_heads=2, ffn_dim=16, num_radial=4, readout_hidden=8),
    "mace": dict(num_channels=4, max_ell=1, hidden_ell=1, num_radial=4, radial_hidden=(8,),
                 readout_hidden=8),
    "nequip": dict(hidden_irreps="4x0e + 2x1o", sh_irreps="0e + 1o", num_basis=4,
                   radial_hidden=8),
    "mlip_mace": dict(num_channels=4, max_ell=1, hidden_ell=1, num_radial=4, radial_hidden=(8,),
                      readout_hidden=8),
}
OPTIONAL = {"mlip_mace": "mlip"}  # model -> the optional package it needs
ROTATION_INVARIANT = {"soap_bpnn", "linear_ace", "mace", "nequip", "mlip_mace"}
ALL_MASKS = ((np.arange(64)[:, None] >> np.arange(6)) & 1).astype(bool)


def small(name: str, **extra):
    hypers = dict(cutoff=CUTOFF, species=SPECIES, **SMALL[name])
    hypers.update(extra)
    return models.create(name, **hypers)


def random_cluster(n: int, seed: int, box: float = 2.6, dmin: float = 0.8):
    """``n`` atoms in a cube, pairwise >= dmin apart, mixed H/O species."""
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < n:
        x = rng.uniform(0.0, box, 3)
        if all(np.linalg.norm(x - y) >= dmin for y in pos):
            pos.append(x)
    z = np.where(rng.random(n) < 0.6, 1, 8).astype(np.int32)
    z[0], z[1] = 1, 8
    return np.array(pos), z


def random_rotation(seed: int) -> np.ndarray:
    return testing.random_rotations(1, seed)[0]


def quick_jit(f):
    """jit without XLA backend optimisation on CPU: halves compile time, which dominates here."""
    cpu = jax.default_backend() == "cpu"
    return jax.jit(f, compiler_options={"xla_backend_optimization_level": 0} if cpu else None)


class Zoo:
    """A small model with jitted entry points, shared by the tests of one model.

    Compilation dominates the cost of these tests, so each model compiles three functions:
    per-atom energies vmapped over a stack of 64 masks (the engine's access pattern) at N=6
    and N=3, and value-and-gradient of the energy (``__call__``) at N=6. Single evaluations
    broadcast their mask to the stack.
    """

    def __init__(self, name: str):
        self.name = name
        self.module = small(name)
        self.params = perturb(models.init(self.module, 1))
        self.fn = models.energy_fn(self.module, self.params)
        apply = self.module.apply
        atomic = lambda p, x, z, m: apply(p, x, z, m, method="atomic_energies")
        self._vatomic = quick_jit(jax.vmap(atomic, (None, None, None, 0)))
        self._vgrad = quick_jit(jax.value_and_grad(lambda p, x, z, m: apply(p, x, z, m), argnums=(0, 1)))

    def batch_atomic(self, x, z, masks) -> np.ndarray:
        """``[B, N]`` per-atom energies for a stack of masks (padded to 64 rows)."""
        masks = np.asarray(masks, bool)
        pad = np.zeros((64 - masks.shape[0], masks.shape[1]), bool)
        return np.asarray(self._vatomic(self.params, x, z, np.concatenate([masks, pad])))[: len(masks)]

    def atomic(self, x, z, m=None) -> np.ndarray:
        m = np.ones(np.shape(z), bool) if m is None else np.asarray(m, bool)
        return self.batch_atomic(x, z, m[None])[0]

    def E(self, x, z, m=None) -> float:
        return float(np.sum(self.atomic(x, z, m)))

    def value_and_grad(self, x, z, m):
        """``(E, (dE/dparams, dE/dpositions))`` through ``module.__call__``."""
        return self._vgrad(self.params, x, z, np.asarray(m, bool))


def perturb(params, scale: float = 0.1, seed: int = 7):
    """Make zero-initialised leaves (biases) non-zero so they are really exercised (numpy RNG:
    no per-shape compilation)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: x + jnp.asarray(scale * rng.normal(size=x.shape), x.dtype), params
    )


@pytest.fixture(scope="module", params=models.available())
def zoo(request) -> Zoo:  # models of OPTIONAL are skipped without their package (conftest)
    return Zoo(request.param)


# ----------------------------------------------------------------------------- mask contract


@pytest.mark.parametrize("keep", [(0, 2, 5), (1, 3, 4), (0, 1, 4)])
def test_mask_equals_extracted_subcluster(zoo, keep):
    x, z = random_cluster(6, seed=3)
    m = np.zeros(6, bool)
    m[list(keep)] = True
    # padding convention: masked atoms get species 0 and sit on top of a present atom
    xp = np.where(m[:, None], x, x[keep[0]])
    zp = np.where(m, z, 0)
    sub = np.array(keep)
    e_sub = zoo.E(x[sub], z[sub])
    assert abs(zoo.E(xp, zp, m) - e_sub) < 1e-10
    assert abs(zoo.E(x, z, m) - e_sub) < 1e-10
    ea = zoo.atomic(xp, zp, m)
    assert np.all(ea[~m] == 0.0)
    np.testing.assert_allclose(ea[m], zoo.atomic(x[sub], z[sub]), atol=1e-10)


def test_empty_mask_gives_zero(zoo):
    x, z = random_cluster(6, seed=3)
    assert zoo.E(x, z, np.zeros(6, bool)) == 0.0


def test_atomic_energies_sum_to_energy(zoo):
    x, z = random_cluster(6, seed=4)
    e_call = float(zoo.value_and_grad(x, z, np.ones(6, bool))[0])  # module __call__ path
    assert abs(e_call - zoo.E(x, z)) < 1e-10


# ----------------------------------------------------------------------------- invariances


def test_translation_and_permutation_invariance(zoo):
    x, z = random_cluster(6, seed=5)
    e = zoo.E(x, z)
    assert abs(zoo.E(x + np.array([3.1, -7.2, 0.4]), z) - e) < 1e-9
    perm = np.random.default_rng(0).permutation(6)
    assert abs(zoo.E(x[perm], z[perm]) - e) < 1e-9
    m = np.array([1, 1, 0, 1, 0, 1], bool)
    assert abs(zoo.E(x[perm], z[perm], m[perm]) - zoo.E(x, z, m)) < 1e-9


def rotation_error(zoo, n_rot: int = 4) -> float:
    """max over random rotations of |E(Rx) - E(x)| minus the baseline-free scale."""
    x, z = random_cluster(6, seed=6)
    e = zoo.E(x, z)
    return max(abs(zoo.E(x @ random_rotation(s).T, z) - e) for s in range(n_rot))


def test_rotation_invariance(zoo):
    err = rotation_error(zoo)
    if zoo.name in ROTATION_INVARIANT:
        assert err < 1e-9
    else:
        # PET is not rotationally constrained: the same check must detect it (it can fail).
        print(f"{zoo.name}: rotational error {err:.3e} eV (random init)")
        assert err > 1e-6


# ----------------------------------------------------------------------------- locality


def test_locality_and_sensitivity(zoo):
    xa, za = random_cluster(3, seed=8)
    xb, zb = random_cluster(3, seed=9)
    far = zoo.module.receptive_field + 2 * 2.6 * np.sqrt(3) + 0.5
    e_a, e_b = zoo.E(xa, za), zoo.E(xb, zb)
    x_far = np.concatenate([xa, xb + np.array([far, 0.0, 0.0])])
    z_ab = np.concatenate([za, zb])
    assert abs(zoo.E(x_far, z_ab) - (e_a + e_b)) < 1e-10
    # control: fragments within the cutoff do interact
    x_near = np.concatenate([xa, xb - xb[0] + xa[0] + np.array([0.0, 0.0, -1.5])])
    d = np.linalg.norm(np.asarray(x_near)[:3, None] - np.asarray(x_near)[None, 3:], axis=-1)
    assert 0.5 < d.min() < CUTOFF
    assert abs(zoo.E(x_near, z_ab) - (e_a + e_b)) > 1e-6


def test_smooth_at_cutoff(zoo):
    """A neighbour crossing the cutoff changes energy and forces continuously."""
    base = np.array([[0.0, 0.0, 0.0], [0.9, 0.3, 0.0]])
    z = np.array([1, 8, 1, 1, 1, 1], np.int32)
    m = np.array([1, 1, 1, 0, 0, 0], bool)
    d = 1e-6
    out = []
    for r in (CUTOFF - d, CUTOFF + d):
        x = np.concatenate([base, np.array([[-r, 0.0, 0.0]] * 4)])
        g = zoo.value_and_grad(x, z, m)[1][1]
        out.append((zoo.E(x, z, m), np.asarray(g)))
    assert abs(out[0][0] - out[1][0]) < 1e-9
    assert np.max(np.abs(out[0][1] - out[1][1])) < 1e-6
    # control: the third atom does interact just inside the cutoff
    x_in = np.concatenate([base, np.array([[-0.7 * CUTOFF, 0.0, 0.0]] * 4)])
    assert abs(zoo.E(x_in, z, m) - out[1][0]) > 1e-8


# ----------------------------------------------------------------------------- baseline


def test_isolated_atom_is_zero(zoo):
    """An isolated atom's energy is the model's composition baseline alone (jbo.models.Model)."""
    x, z = random_cluster(6, seed=10)
    for i in range(6):
        m = np.arange(6) == i
        assert zoo.E(x, z, m) == pytest.approx(0.0, abs=1e-12)
    far = x * (3 * zoo.module.receptive_field)  # every atom isolated from all others
    assert zoo.E(far, z) == pytest.approx(0.0, abs=1e-10)


def test_soap_bias_option_breaks_isolated_baseline():
    module = small("soap_bpnn", use_bias=True)
    params = perturb(models.init(module, 0))
    f = models.energy_fn(module, params)
    e = float(f(np.zeros((1, 3)), np.array([1], np.int32)))
    assert abs(e) > 1e-6


# ----------------------------------------------------------------------------- transforms


def test_gradients_finite_with_padding(zoo):
    x, z = random_cluster(6, seed=11)
    m = np.array([1, 1, 1, 0, 1, 0], bool)
    xp = np.where(m[:, None], x, x[0])  # padding coincident with a present atom
    gp, gx = jax.device_get(zoo.value_and_grad(xp, np.where(m, z, 0), m)[1])
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(gp))
    assert np.all(np.isfinite(gx))
    assert np.all(gx[~m] == 0.0)
    assert np.max(np.abs(gx)) > 0.0


def mobius_orders(subset_energies: np.ndarray, n: int) -> np.ndarray:
    """E^(k), k = 1..n, from E(S) over all 2^n bitmask subsets (inclusion-exclusion)."""
    eps = testing.brute_force_mobius(subset_energies)
    size = np.array([bin(s).count("1") for s in range(1 << n)])
    return np.array([eps[size == k].sum() for k in range(1, n + 1)])


def test_vmap_over_masks_equals_loop(zoo):
    """The engine's access pattern: ``jit(vmap(model))`` over all 64 masks of a cluster."""
    x, z = random_cluster(6, seed=12)
    batched = zoo.batch_atomic(x, z, ALL_MASKS).sum(1)
    for s in np.random.default_rng(1).choice(64, 8, replace=False):  # un-vmapped __call__
        assert abs(batched[s] - float(zoo.value_and_grad(x, z, ALL_MASKS[s])[0])) < 1e-10
    # the same batch, Möbius-inverted: the orders add up, and only linear_ace (nu=2) stops
    per_order = mobius_orders(batched, 6)
    assert abs(per_order.sum() - batched[-1]) < 1e-9
    if zoo.name == "linear_ace":
        assert np.all(np.abs(per_order[3:]) < 1e-10), per_order
    else:  # control: MLP / gated / attention models carry every body order
        assert abs(per_order[5]) > 1e-12, per_order


def test_forces_match_finite_differences(zoo):
    """Central differences of the (cached, vmapped) energy vs the compiled gradient."""
    x, z = random_cluster(6, seed=13)
    m = np.array([1, 1, 1, 1, 1, 0], bool)
    g = np.asarray(zoo.value_and_grad(x, z, m)[1][1])
    fd = -testing.finite_difference_forces(lambda y: zoo.E(y, z, m), x, h=1e-5)
    np.testing.assert_allclose(g, fd, atol=1e-7, rtol=1e-6)
    assert np.all(g[5] == 0.0) and np.max(np.abs(g)) > 1e-4


def test_soap_gaussian_radial_basis_keeps_the_contract():
    """The bounded Gaussian radial basis (``radial="gaussian"``): the basis is its formula,
    a mask equals the extracted subcluster, and forces equal finite differences."""
    from jbo.models import layers

    r = jnp.asarray([0.05, 1.0, 2.9])
    mu = np.linspace(0.0, 3.0, 4)
    want = np.exp(-(((np.asarray(r)[:, None] - mu) / (mu[1] - mu[0])) ** 2)) / 1.12
    np.testing.assert_allclose(layers.radial_basis(r, 4, 3.0, "gaussian"), want, rtol=1e-12)
    with pytest.raises(ValueError, match="bessel"):
        models.create("soap_bpnn", radial="gto")
    module = small("soap_bpnn", radial="gaussian")
    params = perturb(models.init(module, 1))
    e = quick_jit(lambda x, z, m: module.apply(params, x, z, m))
    x, z = random_cluster(5, seed=21)
    keep = np.array([1, 0, 1, 1, 0], bool)
    assert float(e(x, z, keep)) == pytest.approx(
        float(e(np.concatenate([x[keep], 9.0 + x[:2]]), np.concatenate([z[keep], z[:2]]),
                np.array([1, 1, 1, 0, 0], bool))), abs=1e-12)
    g = np.asarray(quick_jit(jax.grad(lambda x: module.apply(params, x, z, keep)))(x))
    h, fd = 1e-5, np.zeros_like(x)
    for a in range(5):
        for c in range(3):
            dx = np.zeros_like(x)
            dx[a, c] = h
            fd[a, c] = (float(e(x + dx, z, keep)) - float(e(x - dx, z, keep))) / (2 * h)
    np.testing.assert_allclose(g, fd, atol=1e-7, rtol=1e-6)
    assert np.all(g[~keep] == 0.0) and np.max(np.abs(g)) > 1e-4


# ----------------------------------------------------------------------------- body order


@pytest.mark.parametrize("nu", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_linear_ace_body_order_is_nu_plus_one(nu):
    """Through the engine: E^(k) = 0 for k >= nu + 2, and E^(nu+1) is really there."""
    module = small("linear_ace", correlation=nu)
    f = models.energy_fn(module, models.init(module, 3))
    x, z = random_cluster(5, seed=14)
    res = quick_jit(lambda x: body_orders(f, x, z))(x)
    per_order = np.asarray(res.per_order)
    assert np.all(np.abs(per_order[nu + 1:]) < 1e-10), per_order
    assert abs(per_order[nu]) > 1e-6
    assert abs(per_order.sum() - float(res.total)) < 1e-9
    assert abs(float(res.total) - float(f(x, z))) < 1e-10


# ----------------------------------------------------------------------------- registry


def test_registry_and_errors():
    assert models.available() == ["linear_ace", "mace", "mlip_mace", "nequip", "pet", "soap_bpnn"]
    with pytest.raises(ValueError, match="available"):
        models.create("schnet")
    with pytest.raises(ValueError, match="valid"):
        models.create("soap_bpnn", max_radail=4)
    with pytest.raises(ValueError, match="baseline is the model's"):
        models.create("mace", species=(1, 8), atom_energies=(0.0, 0.0))
    for name in models.available():
        hy = models.default_hypers(name)
        assert {"cutoff", "species", "use_bias", "dtype"} <= set(hy) and "atom_energies" not in hy
        module = models.create(name)
        assert module.is_local is True
        assert module.receptive_field >= module.cutoff
    module = small("linear_ace")
    f = models.energy_fn(module, models.init(module, 0))
    assert f.cutoff == CUTOFF and f.is_local and f.receptive_field == CUTOFF
    with pytest.raises(ValueError, match="not among"):
        f(np.array([[0.0, 0, 0], [1.0, 0, 0]]), np.array([1, 6], np.int32))
    f(np.zeros((2, 3)), np.array([1, 6], np.int32), np.array([True, False]))  # masked: ok


def test_float32():
    """A float32 model agrees with float64 on the same parameters (cheapest model compiled)."""
    m64, m32 = small("linear_ace"), small("linear_ace", dtype="float32")
    p64 = models.init(m64, 5)
    p32 = jax.tree_util.tree_map(lambda l: l.astype(np.float32), p64)
    x, z = random_cluster(4, seed=16)
    e32 = models.energy_fn(m32, p32)(x, z)
    e64 = models.energy_fn(m64, p64)(x, z)
    assert e32.dtype == np.float32
    assert abs(float(e32) - float(e64)) < 1e-4 * max(1.0, abs(float(e64)))


def test_float32_dtypes_all_models():
    """float32 parameters and energies everywhere (shapes/dtypes only: no compilation)."""
    x, z = random_cluster(4, seed=16)
    m = np.ones(4, bool)
    for name in models.available():
        if name in OPTIONAL and importlib.util.find_spec(OPTIONAL[name]) is None:
            continue
        module = small(name, dtype="float32")
        params = jax.eval_shape(lambda: models.init(module, 0))
        assert {l.dtype for l in jax.tree_util.tree_leaves(params)} <= {np.dtype("float32")}, name
        e = jax.eval_shape(module.apply, params, x, z, m)
        assert e.shape == () and e.dtype == np.float32, name
