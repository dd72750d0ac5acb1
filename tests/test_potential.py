"""jbo.potential: one Potential pytree; the engine takes it traced (new params, no recompile)."""

import jax
import numpy as np
import pytest

import jbo  # noqa: F401
from jbo import checks, decompose, models, potentials, testing
from jbo.decompose import body_orders
from jbo.potential import Potential, as_potential, scaled
from jbo.models import Model
from tests.toy import unvetted

SMALL = dict(max_radial=3, max_angular=2, hidden=(8,))
POS = np.array([[0.0, 0, 0], [0.9, 0, 0], [0, 1.1, 0], [0.2, 0.3, 1.0], [1.2, 1.0, 0.8]])

_compiles: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, _secs, **_kw: _compiles.append(event)
    if event == "/jax/core/compile/backend_compile_duration" else None)


def test_second_parameter_set_reuses_the_compiled_program_and_is_exact():
    module = models.create("soap_bpnn", cutoff=3.0, **SMALL)
    first = models.energy_fn(module, models.init(module, 0))
    second = models.energy_fn(module, models.init(module, 1))
    assert isinstance(second, Potential) and second.static == first.static
    assert len(jax.tree_util.tree_leaves(second)) == len(jax.tree_util.tree_leaves(second.params))
    species = np.ones(len(POS), np.int32)
    body_orders(first, POS, species, layout="masks")  # masks: one program to compile
    programs = decompose._exhaustive._cache_size()
    del _compiles[:]
    got = body_orders(second, POS, species, layout="masks")
    assert decompose._exhaustive._cache_size() == programs  # the same program, new params
    assert _compiles == []  # and nothing else compiled either (contract check: same static)
    truth = testing.brute_force_mbe(second, POS, species).per_order  # extracted, loops
    np.testing.assert_allclose(np.asarray(got.per_order), truth, rtol=0, atol=1e-10)
    assert abs(truth[2]) > 1e-6  # genuinely many-body, and the parameter sets differ:
    assert abs(float(got.total) - float(first(POS, species))) > 1e-6


def test_contract_is_checked_once_per_architecture(monkeypatch):
    fn = unvetted(potentials.morse(depth=4.0, cutoff=2.5))
    body_orders(fn, POS, max_order=2)
    assert fn.static in checks._checked
    calls = []
    monkeypatch.setattr(checks, "check_contract", lambda *a, **k: calls.append(a) or True)
    new_constants = unvetted(potentials.morse(depth=3.0, cutoff=2.5))
    body_orders(new_constants, POS, max_order=2)
    assert calls == []
    new_static = unvetted(potentials.morse(depth=3.0, cutoff=2.0))
    body_orders(new_static, POS, max_order=2)
    assert len(calls) == 1
    body_orders(potentials.morse(depth=3.0, cutoff=1.5), POS, max_order=2)  # proven by tests
    assert len(calls) == 1


def test_plain_callables_are_wrapped_and_non_local_unless_declared():
    morse = potentials.morse(cutoff=2.5)

    def plain(p, s, m):
        return morse.energy(p, s, m)

    pot = as_potential(plain)
    assert isinstance(pot, Potential) and pot.is_local is False and pot.cutoff is None
    assert as_potential(plain).static == pot.static  # hashed by identity: programs reused
    with pytest.raises(ValueError, match="does not declare it"):
        body_orders(plain, POS, cutoff=2.5, max_order=3)
    declared = as_potential(plain, cutoff=2.5, is_local=True)
    assert declared.is_local and declared.cutoff == 2.5
    ref = body_orders(morse, POS).per_order
    np.testing.assert_allclose(body_orders(plain, POS).per_order, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(body_orders(declared, POS, cutoff=2.5, max_order=3).per_order,
                               ref[:3], rtol=0, atol=1e-12)
    plain.cutoff, plain.is_local = 2.5, True  # attributes are read when wrapping
    assert as_potential(plain).is_local and as_potential(plain).cutoff == 2.5
    assert as_potential(morse) is morse


def test_scale_wrapper_is_exact():
    model = potentials.morse(cutoff=2.5)
    species = np.array([1, 8, 1, 8, 1], np.int32)
    mask = np.array([True, True, False, True, True])
    wrapped = scaled(model, 0.25)
    assert wrapped.cutoff == 2.5 and wrapped.is_local
    assert isinstance(wrapped.params["scale"], jax.Array)  # s is a leaf (traced, not static)
    assert float(wrapped(POS, species, mask)) == 0.25 * float(model(POS, species, mask))
    plain, half = (body_orders(f, POS, species) for f in (model, wrapped))
    np.testing.assert_allclose(half.per_order, 0.25 * plain.per_order, rtol=1e-15, atol=1e-15)


def test_trained_and_loaded_models_refuse_unknown_species(tmp_path):
    module = models.create("soap_bpnn", cutoff=3.0, species=(1, 8), **SMALL)
    params = models.init(module, 0)
    trained = Model.of(module, params, {1: -13.6, 8: -2041.3}, 0.37, step=0)
    loaded = models.load(models.save(tmp_path / "m.jbo", trained))
    bad = np.array([1, 8, 6, 1], np.int32)
    for model in (trained, trained.potential, loaded, loaded.potential):
        assert as_potential(model).species == (1, 8)
        with pytest.raises(ValueError, match="not among the model's species"):
            body_orders(model, POS[:4], bad)
    assert isinstance(loaded.potential, Potential)
    ok = np.array([1, 8, 1, 1], np.int32)
    assert float(loaded(POS[:4], ok)) == float(trained(POS[:4], ok))
