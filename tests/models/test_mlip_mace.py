"""InstaDeep's mlip MACE as a zoo model: the masked-energy contract exactly, the engine on it,
model files and training. (Invariances, smoothness at the cutoff, isolated atoms, forces vs
finite differences and vmap-over-masks run for it with every zoo model in test_models.py.)"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mlip")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jbo  # noqa: E402,F401  (float64)
from jbo import models  # noqa: E402
from jbo.decompose import body_orders  # noqa: E402
from jbo.models import Model  # noqa: E402
from tests.models.test_engine_with_models import two_fragments  # noqa: E402
from tests.models.test_models import quick_jit, random_cluster, random_rotation  # noqa: E402

SMALL = dict(num_channels=4, max_ell=1, hidden_ell=1, num_radial=4, radial_hidden=(8,),
             readout_hidden=8)
N = 7


@pytest.fixture(scope="module")
def model():
    module = models.create("mlip_mace", cutoff=3.0, species=(1, 8), **SMALL)
    params = models.init(module, 2)
    atomic = lambda x, z, m: module.apply(params, x, z, m, method="atomic_energies")  # noqa
    return module, params, quick_jit(jax.vmap(atomic, (None, None, 0))), quick_jit(atomic)


def test_masked_energy_equals_extracted_subcluster(model):
    """E(x, z, mask_S) = E(x[S], z[S]) for random subsets, absent atoms anywhere (on top of a
    present atom, species 0) or left in place; their per-atom energies are exactly 0."""
    _, _, batched, single = model
    x, z = random_cluster(N, seed=21)
    rng = np.random.default_rng(3)
    subsets = [np.sort(rng.choice(N, k, replace=False)) for k in (2, 3, 3, 3, 5, 5, 5)]
    masks = np.zeros((len(subsets), N), bool)
    for row, s in zip(masks, subsets):
        row[s] = True
    in_place = np.asarray(batched(x, z, masks))
    worst = 0.0
    for m, s, ea in zip(masks, subsets, in_place):
        alone = np.asarray(single(x[s], z[s], np.ones(len(s), bool)))
        padded = np.asarray(single(np.where(m[:, None], x, x[s[0]]), np.where(m, z, 0), m))
        assert np.all(ea[~m] == 0.0) and np.all(padded[~m] == 0.0)
        worst = max(worst, np.max(np.abs(ea[m] - alone)), np.max(np.abs(padded[m] - alone)))
    assert worst < 1e-12, worst
    # control: the learned part is really there (not just the composition baseline)
    base = np.where(z == 1, -0.5, -75.0)
    assert np.max(np.abs(in_place[-1][masks[-1]] - base[masks[-1]])) > 1e-5


def test_rotation_and_permutation_invariance(model):
    _, _, batched, _ = model
    x, z = random_cluster(N, seed=22)
    perm = np.random.default_rng(0).permutation(N)
    m = np.ones((1, N), bool)
    e = float(np.sum(batched(x, z, m)))
    for s in range(3):
        assert abs(float(np.sum(batched(x @ random_rotation(s).T, z, m))) - e) < 1e-10
    assert abs(float(np.sum(batched(x[perm], z[perm], m))) - e) < 1e-10


def test_engine_orders_sum_to_total_and_vanish_between_fragments():
    """Σ_k E^(k) = E; ε(S) = 0 for S disconnected in the cutoff graph (connected mode equals
    the exhaustive lattice), and the model is genuinely many-body."""
    module = models.create("mlip_mace", cutoff=2.5, **SMALL)
    fn = models.energy_fn(module, models.init(module, 0))
    assert fn.is_local and fn.receptive_field == 2 * 2.5
    pos = two_fragments(1)
    ex = body_orders(fn, pos, layout="masks")
    assert abs(float(np.sum(ex.per_order)) - float(fn(pos, np.ones(7, np.int32)))) < 1e-10
    np.testing.assert_allclose(ex.per_order[4:], 0.0, atol=1e-10)  # fragments of <= 4 atoms
    assert abs(float(ex.per_order[3])) > 1e-8 and abs(float(ex.per_order[2])) > 1e-6
    co = body_orders(fn, pos, cutoff=fn.cutoff, max_order=4)
    np.testing.assert_allclose(co.per_order, ex.per_order[:4], atol=1e-10)


def test_model_file_round_trip(model, tmp_path):
    module, params, _, _ = model
    trained = Model.of(module, params, {1: -13.6, 8: -2041.3}, 0.37, step=0)
    pot = models.load(models.save(tmp_path / "m.jbo", trained))
    x, z = random_cluster(5, seed=23)
    e0, f0 = trained.energy_and_forces(x, z)
    e1, f1 = pot.energy_and_forces(x, z)
    assert float(e0) == float(e1) and np.array_equal(np.asarray(f0), np.asarray(f1))
    assert pot.meta["model"] == "mlip_mace" and pot.meta["hypers"]["max_ell"] == 1


def test_trains_with_avg_num_neighbors_from_the_data(toy_db):
    from jbo.train import RegularizerConfig, train
    from jbo.train.constants import avg_num_neighbors
    from tests.toy import toy_config

    cfg = toy_config(toy_db, model="mlip_mace", hypers=dict(cutoff=3.0, **SMALL), max_steps=4,
                     force_weight=0.0, regularizer=RegularizerConfig())
    res = train(cfg)
    assert len(res.steps) == 4 and np.all(np.isfinite([s["loss"] for s in res.steps]))
    # MACE's normalisation is taken from the training structures, not the default 4
    expected = avg_num_neighbors(res.data.train, 3.0)
    assert res.model.module.avg_num_neighbors == pytest.approx(expected, rel=1e-5) and expected != 4.0
    change = lambda a, b: float(jnp.max(jnp.abs(a - b), initial=0.0))  # noqa: E731
    moved = jax.tree_util.tree_map(change, res.params, models.init(res.model.module, cfg.seed))
    assert max(jax.tree_util.tree_leaves(moved)) > 0.0


def test_inconsistent_hypers_are_refused():
    with pytest.raises(ValueError, match="hidden_ell"):
        models.create("mlip_mace", max_ell=1, hidden_ell=2)
