"""Force training: the energy+force loss's gradient against finite differences of the loss for
every zoo model, subcluster forces as labels, force errors in the run's metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jbo import models
from jbo.data.batch import pad_records
from jbo.data.records import Record
from jbo.models import Model
from jbo.train import TrainConfig, train
from jbo.train import dataset as ds
from jbo.train.losses import energy_force_loss
from tests.models.test_models import SMALL as MODEL_SMALL
from tests.toy import (ToyEAM, reference_energy, reference_forces, toy_cluster,
                       write_toy_db)

SMALL = {  # tiny hypers (compile time dominates): the model tests' sizes, smaller for two
    **MODEL_SMALL,
    "soap_bpnn": dict(max_radial=3, max_angular=2, hidden=(8,)),
    "pet": dict(d_model=8, num_heads=2, ffn_dim=8, num_radial=4, readout_hidden=8),
}
SLOW = {"mace", "nequip", "mlip_mace"}  # second derivatives of equivariant nets compile for ~a minute


def _batch(sizes=(3, 4, 4)) -> dict[str, np.ndarray]:
    recs = []
    for j, n in enumerate(sizes):
        pos = toy_cluster(n, 40 + j)
        recs.append(Record(pos, np.ones(n, np.int32), reference_energy(pos),
                           reference_forces(pos) if j else None, f"c{j}", (1 << n) - 1, n,
                           "train"))
    return pad_records(recs)  # the first row has no forces: must not count


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in models.available()])
def test_force_loss_gradient_matches_finite_differences(name):
    """d/dt L(p + t v) at t = 0 from jax.grad equals the central difference of L, for the
    energy + force loss; the force term changes the gradient (it is really in the loss)."""
    module = models.create(name, cutoff=3.0, **SMALL[name])
    params = models.init(module, 0)
    model = Model.of(module, params, {1: -13.6}, 0.7)
    batch = jax.tree_util.tree_map(jnp.asarray, _batch())

    def loss_of(p, wf):
        return energy_force_loss(model.replace(params=p), batch, 1.0, wf)[0]
    loss = jax.jit(loss_of, static_argnums=1)
    grad = jax.jit(jax.grad(loss_of), static_argnums=1)
    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(0)
    v = jax.tree_util.tree_unflatten(tree, [rng.normal(size=np.shape(x)) for x in leaves])
    dot = lambda a, b: sum(float(jnp.vdot(x, y)) for x, y in  # noqa: E731
                           zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    h = 1e-5
    shift = lambda t: jax.tree_util.tree_map(lambda p, d: p + t * d, params, v)  # noqa: E731
    for wf in (0.0, 3.0):
        analytic = dot(grad(params, wf), v)
        fd = (float(loss(shift(h), wf)) - float(loss(shift(-h), wf))) / (2 * h)
        np.testing.assert_allclose(analytic, fd, rtol=1e-6, atol=1e-9)
    assert abs(dot(grad(params, 3.0), v) - dot(grad(params, 0.0), v)) > 1e-6


def test_force_training_reports_force_errors_and_uses_subcluster_forces(tmp_path):
    db = write_toy_db(tmp_path / "toy.db")
    cfg = TrainConfig(db=str(db), model="toy", makeup="up_to:3", epochs=4, batch_size=16,
                      lr=1e-2, force_weight=1.0, progress=False, tensorboard=False)
    data = ds.prepare(cfg)
    subs = [r for r in data.train if not r.is_full]
    assert subs and all(r.forces is not None for r in subs)  # subclusters are force labels
    res = train(cfg, module=ToyEAM())
    h = res.history
    assert all(np.isfinite([r["train_force_mae"], r["val_force_mae"], r["val_force_rmse"]]).all()
               for r in h)
    assert h[-1]["val_force_rmse"] >= h[-1]["val_force_mae"] > 0
    assert h[-1]["train_force_mae"] < h[0]["train_force_mae"]
    # the validation force MAE is the mean |ΔF| component of the validation clusters (meV/Å)
    from jbo.train.losses import batch_energy_forces
    b = pad_records(data.val)
    _, f = batch_energy_forces(res.model, b.positions, b.species, b.mask, True)
    err = np.abs(np.asarray(f) - b.forces)[b.mask]
    best = min(range(len(h)), key=lambda i: h[i]["val_mae"])
    np.testing.assert_allclose(h[best]["val_force_mae"], 1e3 * err.mean(), rtol=1e-9)
