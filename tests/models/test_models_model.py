"""jbo.models.Model: a pytree whose leaves are the params; E = Σ_i c_Z + s · module exactly;
compiled programs reused for new params; the model files shipped under results/ still load."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbo  # noqa: F401  (float64)
from jbo import models
from jbo.decompose import body_orders
from jbo.models import Model
from tests.toy import toy_cluster

ROOT = Path(__file__).resolve().parents[2]
SOAP = dict(max_radial=2, max_angular=1, hidden=(4,))


def _model(seed: int = 0) -> Model:
    module = models.create("soap_bpnn", cutoff=3.0, species=(1, 8), **SOAP)
    return Model.of(module, models.init(module, seed), {1: -13.6, 8: -2041.3}, 0.37)


def test_leaves_are_the_params_and_tree_map_keeps_the_rest():
    model = _model()
    leaves = jax.tree_util.tree_leaves(model)
    assert len(leaves) == len(jax.tree_util.tree_leaves(model.params))
    assert all(a is b for a, b in zip(leaves, jax.tree_util.tree_leaves(model.params)))
    doubled = jax.tree.map(lambda x: 2 * x, model)
    assert isinstance(doubled, Model) and doubled.static == model.static
    assert doubled.baseline == model.baseline and doubled.scale == model.scale
    for a, b in zip(jax.tree_util.tree_leaves(doubled), leaves):
        np.testing.assert_array_equal(np.asarray(a), 2 * np.asarray(b))


def test_jit_is_not_retraced_for_new_params_of_the_same_model():
    traces = []

    @jax.jit
    def energy(model, x, z):
        traces.append(1)
        return model.potential.energy(x, z, jnp.ones(z.shape, bool))

    x, z = toy_cluster(4, 1), np.array([1, 8, 1, 1], np.int32)
    first, second = _model(0), _model(1)
    e1, e2 = energy(first, x, z), energy(second, x, z)
    assert len(traces) == 1 and float(e1) != float(e2)
    assert float(e2) == float(second(x, z))
    # another baseline is another static part: a new program, by design (the engine takes
    # model.potential, whose leaves hold c and s, so its programs are keyed on the module alone)
    energy(second.replace(scale=0.5), x, z)
    assert len(traces) == 2
    assert first.potential.static == second.replace(scale=0.5, meta={"a": 1}).potential.static
    # provenance is no part of a program's key: two files of one architecture share it
    filed = second.replace(meta={"run": "regularized", "db": "x.npz"}, step=1200)
    assert float(energy(filed, x, z)) == float(e2) and len(traces) == 2
    assert filed.static == second.static and filed == second.replace(step=-1)
    assert jax.tree.map(lambda p: p, filed).meta["run"] == "regularized"  # kept on the host


def test_energy_is_baseline_plus_scaled_module_and_only_order_one_moves():
    model = _model()
    x, z = toy_cluster(5, 2), np.array([1, 8, 1, 8, 1], np.int32)
    mask = np.array([True, True, False, True, True])
    raw = float(model.module.apply(model.params, x, z, mask))
    present = -13.6 * 2 + -2041.3 * 2  # atoms 0, 1, 3, 4 (atom 2 masked)
    assert float(model(x, z, mask)) == pytest.approx(present + 0.37 * raw, rel=0, abs=1e-9)
    bare = model.replace(baseline=None, scale=1.0)
    shifted, plain = body_orders(model, x, species=z), body_orders(bare, x, species=z)
    np.testing.assert_allclose(shifted.per_order[0] - 0.37 * plain.per_order[0],
                               -13.6 * 3 + -2041.3 * 2, rtol=0, atol=1e-9)
    # subset energies carry the baseline (|E| ~ 8e3 eV): round-off ~ eps |E| 2^n ~ 6e-11 eV
    np.testing.assert_allclose(shifted.per_order[1:], 0.37 * plain.per_order[1:], rtol=0,
                               atol=1e-10)


def test_a_model_is_its_own_jit_static_only_without_params():
    model = _model()
    template = model.replace(params=None)
    assert hash(template) == hash(_model(3).replace(params=None))
    assert template == _model(3).replace(params=None) and model != _model(0)
    assert model == model.replace()  # the same params object


def test_bad_baseline_is_refused():
    module = models.create("soap_bpnn", **SOAP)
    with pytest.raises(ValueError, match="at most 119"):
        Model.of(module, None, np.zeros(200))


@pytest.mark.parametrize("path", sorted(ROOT.glob("results/train_body_order_reg/*.jbo")),
                         ids=lambda p: p.name)
def test_shipped_model_files_load_as_models(path):
    """Files written before Model existed (format 1) load with their baseline and scale."""
    import flax.serialization

    model = models.load(path)
    raw = flax.serialization.msgpack_restore(path.read_bytes())
    assert isinstance(model, Model) and model.step == -1
    assert model.scale == float(raw["scale"])
    np.testing.assert_array_equal(np.asarray(model.baseline), np.asarray(raw["baseline"]))
    x, z = toy_cluster(4, 3), np.ones(4, np.int32)
    e = float(model(x, z))
    raw_e = float(model.module.apply(model.params, x, z, np.ones(4, bool)))
    assert e == pytest.approx(4 * raw["baseline"][1] + raw["scale"] * raw_e, rel=1e-12)


def test_isolated_atom_energy_is_its_baseline_exactly():
    model = _model()
    for z, c in ((1, -13.6), (8, -2041.3)):
        assert float(model(np.zeros((1, 3)), np.array([z], np.int32))) == c


@pytest.mark.parametrize("e0", [[], [0.0, 0.0], [-0.5, -75.0]])
def test_files_of_zoo_models_with_the_removed_atom_energies_setting_load(e0, tmp_path):
    """Before Model, zoo modules had an ``atom_energies`` hyperparameter (eV per species,
    inside the module, so scaled by s); every file wrote it. Loading folds it into the
    baseline: c_Z + s e_Z, the same energy to rounding."""
    import json

    import flax.serialization

    model = _model()
    path = models.save(tmp_path / "m.jbo", model)
    raw = flax.serialization.msgpack_restore(path.read_bytes())
    raw["hypers"] = json.dumps({**json.loads(raw["hypers"]), "atom_energies": e0})
    path.write_bytes(flax.serialization.msgpack_serialize(raw))
    loaded = models.load(path)
    x, z = toy_cluster(4, 5), np.array([1, 8, 1, 1], np.int32)
    shift = 0.37 * (3 * e0[0] + e0[1]) if e0 else 0.0
    if not any(e0):
        assert loaded.baseline == model.baseline and float(loaded(x, z)) == float(model(x, z))
    assert float(loaded(x, z)) == pytest.approx(float(model(x, z)) + shift, rel=1e-14, abs=1e-11)
    assert "atom_energies" not in loaded.meta["hypers"]


def test_save_names_the_model_of_a_training_result(tmp_path):
    class Result:  # what a TrainResult looks like to save(): not a Model
        model = None

    with pytest.raises(TypeError, match=r"result\.model"):
        models.save(tmp_path / "m.jbo", Result())
    with pytest.raises(TypeError, match=r"replace\(params="):
        models.save(tmp_path / "m.jbo", _model(), {"params": {}})
