"""The engine driving real zoo models: connected mode, unknown species, truncated vs exhaustive."""

import jax
import numpy as np
import pytest

import jbo  # noqa: F401
from jbo import models
from jbo.decompose import body_orders

SMALL = {
    "soap_bpnn": dict(max_radial=4, max_angular=3, hidden=(16, 16)),
    "pet": dict(d_model=16, num_heads=2, ffn_dim=16, num_radial=4, readout_hidden=8),
}


def two_fragments(seed: int) -> np.ndarray:
    """Seven H atoms: a compact 4-atom and a 3-atom fragment 6 Å apart (cutoff 2.5 Å)."""
    rng = np.random.default_rng(seed)
    a = np.array([[0, 0, 0], [0.9, 0, 0], [0, 1.0, 0], [0.5, 0.5, 0.9]]) + rng.normal(0, 0.05, (4, 3))
    b = np.array([[6.0, 0, 0], [6.9, 0.2, 0], [6.3, 1.0, 0.3]]) + rng.normal(0, 0.05, (3, 3))
    return np.concatenate([a, b])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_connected_mode_equals_exhaustive_for_zoo_models(name):
    module = models.create(name, cutoff=2.5, **SMALL[name])
    fn = models.energy_fn(module, models.init(module, 0))
    pos = two_fragments(1)
    ex = body_orders(fn, pos, layout="masks")
    co = body_orders(fn, pos, cutoff=fn.cutoff, max_order=4)
    np.testing.assert_allclose(co.per_order, ex.per_order[:4], atol=1e-9)
    np.testing.assert_allclose(ex.per_order[4:], 0.0, atol=1e-9)  # fragments of <= 4 atoms
    assert np.abs(np.asarray(ex.per_order[2])) > 1e-6  # the model is genuinely many-body
    tr = body_orders(fn, pos, max_order=3)
    np.testing.assert_allclose(tr.per_order, ex.per_order[:3], atol=1e-9)


def test_unknown_species_is_refused_before_tracing():
    module = models.create("soap_bpnn", **SMALL["soap_bpnn"])
    fn = models.energy_fn(module, models.init(module, jax.random.PRNGKey(0)))
    with pytest.raises(ValueError, match="not among the model's species"):
        body_orders(fn, two_fragments(2)[:4], np.array([1, 8, 1, 1], np.int32))
    with pytest.raises(ValueError, match="invalid atomic number"):
        body_orders(fn, two_fragments(2)[:4], np.array([1, 0, 1, 1], np.int32))
