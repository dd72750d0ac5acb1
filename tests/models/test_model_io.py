"""jbo.models.save / load: one portable file -> the same energies and forces, clear errors."""

from __future__ import annotations

import json

import flax.serialization
import jax.numpy as jnp
import numpy as np
import pytest

from jbo import models
from jbo.calculator import JboCalculator
from jbo.decompose import body_orders
from jbo.models import Model
from jbo.train.model import load_trained
from tests.train.test_train_forces import SLOW, SMALL
from tests.toy import toy_cluster

BASE = {1: -13.6, 8: -2041.3}


def _trained(name: str) -> Model:
    module = models.create(name, cutoff=3.0, species=(1, 8), **SMALL[name])
    params = models.init(module, 3)
    return Model.of(module, params, BASE, 0.37, step=0)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in models.available()])
def test_round_trip_gives_identical_energies_and_forces(name, tmp_path):
    orig = _trained(name)
    path = models.save(tmp_path / f"{name}.jbo", orig, metadata={"note": "test"})
    assert path.stat().st_size < 200_000
    pot = models.load(path)
    pos = toy_cluster(5, 7)
    z = np.array([1, 8, 1, 1, 8], np.int32)
    e0, f0 = orig.energy_and_forces(pos, z)
    e1, f1 = pot.energy_and_forces(pos, z)
    assert float(e0) == float(e1) and np.array_equal(np.asarray(f0), np.asarray(f1))
    assert float(pot(pos, z)) == float(e0)
    assert pot.meta["metadata"] == {"note": "test"} and pot.meta["model"] == name
    assert pot.cutoff == 3.0 and pot.is_local == orig.is_local


def test_file_is_accepted_by_engine_calculator_and_cli(tmp_path, capsys):
    from ase import Atoms
    from jbo.cli import main
    from tests.toy import write_toy_db
    path = models.save(tmp_path / "soap.jbo", _trained("soap_bpnn"))
    pot = load_trained(path)
    pos = toy_cluster(4, 2)
    z = np.ones(4, np.int32)
    orders = body_orders(pot, pos, species=z)
    np.testing.assert_allclose(float(jnp.sum(orders.per_order)), float(pot(pos, z)),
                               rtol=0, atol=1e-9)
    atoms = Atoms("H4", positions=pos)
    atoms.calc = JboCalculator(path)
    e, f = pot.energy_and_forces(pos, z)
    assert atoms.get_potential_energy() == float(e)
    np.testing.assert_array_equal(atoms.get_forces(), np.asarray(f))
    db = write_toy_db(tmp_path / "toy.db", train_sizes=(4,), heldout_sizes=(4,), forces=False)
    assert main(["decompose", str(path), "--db", str(db)]) == 0
    assert "E^(4)" in capsys.readouterr().out


def test_loaded_model_can_be_first_called_inside_jit_and_vmap(tmp_path):
    """The model's Potential is built on first use: built inside a trace, it once cached that
    trace's tracers, and the next jitted call failed with UnexpectedTracerError."""
    import jax
    pot = models.load(models.save(tmp_path / "soap.jbo", _trained("soap_bpnn")))
    pos = np.stack([toy_cluster(4, s) for s in range(3)])
    z = np.ones((3, 4), np.int32)
    batched = jax.jit(jax.vmap(lambda p, s: pot(p, s)))
    e3, e2 = batched(pos, z), batched(pos[:2], z[:2])  # two traces
    want = [float(_trained("soap_bpnn")(p, s)) for p, s in zip(pos, z)]
    np.testing.assert_allclose(np.asarray(e3), want, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(e2), want[:2], rtol=0, atol=1e-10)


def _rewrite(path, **changes):
    data = flax.serialization.msgpack_restore(path.read_bytes())
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    path.write_bytes(flax.serialization.msgpack_serialize(data))


def test_bad_files_give_clear_errors(tmp_path):
    path = models.save(tmp_path / "m.jbo", _trained("soap_bpnn"))
    with pytest.raises(ValueError, match="holds a 'soap_bpnn' model, not 'pet'"):
        models.load(path, model="pet")
    bad = tmp_path / "text.jbo"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="is not a jbo model file"):
        models.load(bad)
    with pytest.raises(FileNotFoundError, match="no model file"):
        models.load(tmp_path / "nope.jbo")
    _rewrite(path, format_version=99)
    with pytest.raises(ValueError, match="newer than this jbo reads"):
        models.load(path)
    _rewrite(path, format_version=1, scale=None)
    with pytest.raises(ValueError, match=r"lacks keys \['scale'\]"):
        models.load(path)
    path = models.save(tmp_path / "m.jbo", _trained("soap_bpnn"))
    _rewrite(path, model="pet", **{"class": "PET"})
    with pytest.raises(ValueError, match="do not fit a 'pet' model"):
        models.load(path)
    path = models.save(tmp_path / "m.jbo", _trained("soap_bpnn"))
    hypers = json.loads(flax.serialization.msgpack_restore(path.read_bytes())["hypers"])
    _rewrite(path, hypers=json.dumps({**hypers, "max_radial": 5}))
    with pytest.raises(ValueError, match="do not fit"):
        models.load(path)
    with pytest.raises(ValueError, match="only jbo.models zoo models"):
        from tests.toy import ToyEAM
        models.save(tmp_path / "toy.jbo", ToyEAM(), {"params": {}})
