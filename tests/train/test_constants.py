"""Normalisation constants from the training data (jbo.train.constants), checked against
counts and sums written out here, and carried into checkpoints and model files."""

from __future__ import annotations

import numpy as np
import pytest

import jbo  # noqa: F401  (float64)
from jbo import models
from jbo.data.records import Record
from jbo.train.constants import avg_num_neighbors, feature_rms, resolve_hypers


def _records(sizes=(3, 5, 4), seed=0, spread=3.0) -> list[Record]:
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(sizes):
        pos = rng.uniform(0.0, spread, size=(n, 3))
        out.append(Record(pos, np.ones(n, np.int32), 0.0, None, f"c{i}", (1 << n) - 1, n,
                          "train", "low"))
    return out


def test_avg_num_neighbors_is_the_mean_count_within_the_cutoff():
    recs = _records()
    cutoff = 2.0
    counts = [sum(1 for j in range(r.n_atoms) if j != i
                  and np.linalg.norm(r.positions[i] - r.positions[j]) < cutoff)
              for r in recs for i in range(r.n_atoms)]
    assert avg_num_neighbors(recs, cutoff) == pytest.approx(max(np.mean(counts), 1.0), abs=1e-12)


def test_soap_feature_scale_gives_unit_rms_features():
    """resolve_hypers picks feature_scale = 1/RMS, so the scaled features have RMS 1 over the
    present atoms; sizes differ, so padding atoms must not count."""
    recs = _records(sizes=(2, 6, 4))
    hyp = resolve_hypers("soap_bpnn", {"max_radial": 3, "max_angular": 2, "hidden": [4]}, recs)
    module = models.create("soap_bpnn", **hyp)
    rms = feature_rms(module, recs)  # features of the module with the resolved scale
    assert rms == pytest.approx(1.0, rel=1e-5)  # the stored scale is rounded to 6 digits
    import jax
    import jax.numpy as jnp
    p = models.init(module, 0)
    f = jax.jit(lambda *a: module.apply(p, *a, method=type(module).features))
    feats = np.concatenate([np.asarray(f(jnp.asarray(r.positions), jnp.asarray(r.species),
                                         jnp.ones(r.n_atoms, bool)))
                            for r in recs])  # one structure at a time, unpadded
    assert np.sqrt(np.mean(feats**2)) == pytest.approx(1.0, rel=1e-5)


def test_given_values_win_and_models_without_constants_are_untouched():
    recs = _records()
    assert resolve_hypers("soap_bpnn", {"feature_scale": 2.5}, recs) == {"feature_scale": 2.5}
    assert resolve_hypers("pet", {"d_model": 16}, recs) == {"d_model": 16}
    mace = resolve_hypers("mace", {"cutoff": 2.0}, recs)
    assert mace["avg_num_neighbors"] == pytest.approx(avg_num_neighbors(recs, 2.0), abs=1e-6)


def test_isolated_atoms_give_a_clear_error():
    far = _records(sizes=(1, 1))
    with pytest.raises(ValueError, match="feature_scale"):
        resolve_hypers("soap_bpnn", {"max_radial": 2, "max_angular": 1}, far)


def test_resolved_constants_travel_with_the_model(toy_db, tmp_path):
    """A trained SOAP-BPNN's data-derived feature scale is in its checkpoint meta and its model
    file: both reload the same energies."""
    from jbo.train import TrainConfig, train
    from jbo.train.model import load_trained

    cfg = TrainConfig(db=str(toy_db), model="soap_bpnn", makeup="up_to:2", epochs=1,
                      hypers={"max_radial": 2, "max_angular": 1, "hidden": [4]},
                      out_dir=str(tmp_path / "run"), progress=False, tensorboard=False)
    res = train(cfg)
    scale = res.model.module.feature_scale
    assert scale != 1.0
    path = models.save(tmp_path / "m.jbo", res.model)
    loaded, resumed = models.load(path), load_trained(tmp_path / "run", which="best")
    assert loaded.module.feature_scale == scale == resumed.module.feature_scale
    r = res.data.val[0]
    e = [float(m(r.positions, r.species)) for m in (loaded, resumed)]
    assert e[0] == pytest.approx(e[1], abs=1e-10)
