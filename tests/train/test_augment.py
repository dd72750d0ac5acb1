"""Rotational augmentation (``TrainConfig.rotate``): the rotation sampler is Haar-uniform, a step
turns positions and force labels by one rotation per structure, the augmentation is exact for an
invariant model, and PET trained with it becomes more nearly invariant."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jbo import analysis, models, potentials
from jbo.data.batch import pad_records
from jbo.data.records import Record
from jbo.models import Model
from jbo.rotations import quaternion_matrix, random_rotations
from jbo.train import TrainConfig, train
from jbo.train.config import RegularizerConfig
from jbo.train.runs import config_diff
from jbo.train.step import OptSpec, StepSpec, augment, objective
from tests.train.test_train import OLD_LOOP_LOSS, OLD_LOOP_VAL, roundoff_rtol
from tests.toy import ToyEAM, reference_energy, reference_forces, toy_cluster, toy_config


def _angle_ks(r: np.ndarray) -> float:
    """Kolmogorov–Smirnov distance between the rotation angles of ``r[M,3,3]`` and the Haar law
    of the angle, F(θ) = (θ − sin θ)/π."""
    theta = np.sort(np.arccos(np.clip((np.trace(r, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))
    cdf = (theta - np.sin(theta)) / np.pi
    m = len(theta)
    return float(max(np.max(np.arange(1, m + 1) / m - cdf), np.max(cdf - np.arange(m) / m)))


def test_rotation_sampler_is_haar_uniform():
    m = 20000
    r = np.asarray(random_rotations(jax.random.PRNGKey(0), (m,)))
    assert r.shape == (m, 3, 3)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape),
                               atol=1e-12)
    # Haar: E[R] = 0, E[R_ij²] = 1/3 (each column uniform on the sphere); per-entry std of the
    # sample mean is 1/sqrt(3m)
    assert np.abs(r.mean(0)).max() < 3 / np.sqrt(m)
    np.testing.assert_allclose((r**2).mean(0), 1 / 3, atol=5 * np.sqrt(4 / 45 / m))
    # the angle law: KS distance below the 1% critical value 1.63/sqrt(m) ...
    assert _angle_ks(r) < 1.63 / np.sqrt(m)
    # ... which a plausible wrong sampler (uniform quaternion *angles*) fails
    rng = np.random.default_rng(0)
    half = rng.uniform(0, np.pi / 2, m)
    axis = rng.normal(size=(m, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    wrong = np.asarray(quaternion_matrix(np.c_[np.cos(half), np.sin(half)[:, None] * axis]))
    assert _angle_ks(wrong) > 5 * 1.63 / np.sqrt(m)
    # a function of the key only
    np.testing.assert_array_equal(r, np.asarray(random_rotations(jax.random.PRNGKey(0), (m,))))
    assert not np.allclose(r[:10], np.asarray(random_rotations(jax.random.PRNGKey(1), (10,))))


def _records(sizes, seed0: int, labels) -> list[Record]:
    out = []
    for j, n in enumerate(sizes):
        pos = toy_cluster(n, seed0 + j)
        e, f = labels(pos)
        out.append(Record(pos, np.ones(n, np.int32), e, f, f"c{seed0 + j}", (1 << n) - 1, n,
                          "train", "toy"))
    return out


def test_augment_turns_positions_and_force_labels_by_one_rotation_per_structure():
    """The augmented force labels are the reference's forces of the augmented structures
    (finite differences of the analytic energy there): F' = R F with the positions' R."""
    recs = _records((4, 5, 4), 40, lambda p: (reference_energy(p), reference_forces(p)))
    batch = pad_records(recs)
    reg = pad_records(recs[1:])
    out, out_reg = jax.jit(augment)(jax.tree_util.tree_map(jnp.asarray, batch),
                                    jax.tree_util.tree_map(jnp.asarray, reg),
                                    jax.random.PRNGKey(3))
    rots = []
    for b, r in enumerate(recs):
        n = r.n_atoms
        x, f = np.asarray(out.positions[b, :n]), np.asarray(out.forces[b, :n])
        assert abs(reference_energy(x) - r.energy) < 1e-12  # the energy labels stay valid
        np.testing.assert_allclose(f, reference_forces(x), atol=1e-7)
        rt = np.linalg.lstsq(r.positions, x, rcond=None)[0]  # x = positions @ Rᵀ
        np.testing.assert_allclose(rt @ rt.T, np.eye(3), atol=1e-10)
        assert np.linalg.det(rt) > 0 and not np.allclose(rt, np.eye(3), atol=1e-3)
        rots.append(rt)
    assert not np.allclose(rots[1], rots[2], atol=1e-3)  # one rotation per structure
    # the regularizer's clusters turn too, by rotations of their own
    x, x0 = np.asarray(out_reg.positions[0, :5]), recs[1].positions
    np.testing.assert_allclose(np.linalg.norm(x[:, None] - x[None], axis=-1),
                               np.linalg.norm(x0[:, None] - x0[None], axis=-1), atol=1e-12)
    assert not np.allclose(x, np.asarray(out.positions[1, :5]), atol=1e-3)
    np.testing.assert_array_equal(out.energy, batch.energy)
    # a row's rotation depends on the key and its index only, not on the padded batch size
    # (sharded runs pad batches to the device count)
    wider, _ = jax.jit(augment)(jax.tree_util.tree_map(jnp.asarray, pad_records(recs, size=5)),
                                None, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(wider.positions[:3], out.positions)


_MORSE = potentials.morse(cutoff=3.0)
_SOAP = {"max_radial": 2, "max_angular": 1, "hidden": [4], "cutoff": 3.0}


def _morse_labels(p):
    e, f = _MORSE.energy_and_forces(p, np.ones(len(p), np.int32))
    return float(e), np.asarray(f)


def test_augmentation_is_exact_for_an_invariant_model():
    """SOAP-BPNN on Morse labels (energies, forces, body-order penalty): the training objective
    and its gradient on randomly rotated batches equal the unrotated ones to round-off, so a
    rotate=True step of an invariant model is the plain step — because the force labels turn
    with the structure (left unturned, the loss changes)."""
    recs = _records((3, 4, 4, 5), 60, _morse_labels)
    module = models.create("soap_bpnn", **_SOAP)
    model = Model.of(module, None, {1: -13.6}, 0.7)
    reg = RegularizerConfig(lam=0.1, order=2, batch_size=2, backend="masks")
    spec = StepSpec(model, OptSpec.of(TrainConfig(), 1), reg, 1.0, 1.0)
    key = jax.random.PRNGKey(0)
    f = jax.jit(jax.value_and_grad(lambda p, b, r: objective(spec, p, b, r, key), has_aux=True))
    put = functools.partial(jax.tree_util.tree_map, jnp.asarray)
    batch, reg_batch = put(pad_records(recs)), put(pad_records(recs[1:]))
    params = models.init(module, 1)
    (loss, (_, penalty, _)), grad = f(params, batch, reg_batch)
    assert float(penalty) > 0
    turn = jax.jit(augment)
    for k in range(3):
        b, r = turn(batch, reg_batch, jax.random.PRNGKey(k))
        (loss_r, (_, penalty_r, _)), grad_r = f(params, b, r)
        np.testing.assert_allclose(float(loss_r), float(loss), rtol=1e-12)
        np.testing.assert_allclose(float(penalty_r), float(penalty), rtol=1e-10)
        for x, y in zip(jax.tree_util.tree_leaves(grad_r), jax.tree_util.tree_leaves(grad)):
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12 * float(loss))
    unturned = f(params, b.replace(forces=batch.forces), r)[0][0]
    assert abs(float(unturned) / float(loss) - 1) > 1e-3


def test_rotated_training_of_an_invariant_model_keeps_the_loss_curve(toy_db):
    """The toy run (ToyEAM, a function of distances; forces and regularizer on) with rotate=True
    reproduces the per-step losses and validation MAEs of the unrotated run in this process,
    and the pinned ones, to the run's round-off (rotated coordinates differ from the originals
    in the last bits: the bound of ``roundoff_rtol``)."""
    res = train(toy_config(toy_db, rotate=True), module=ToyEAM())
    plain = train(toy_config(toy_db), module=ToyEAM())
    rtol = roundoff_rtol(plain)
    for got, want in ((res, plain), (res, None)):
        loss = OLD_LOOP_LOSS if want is None else [s["loss"] for s in want.steps]
        val = OLD_LOOP_VAL if want is None else [h["val_mae"] for h in want.history]
        np.testing.assert_allclose([s["loss"] for s in got.steps], loss, rtol=rtol)
        np.testing.assert_allclose([h["val_mae"] for h in got.history], val, rtol=rtol)


_PET = {"d_model": 8, "num_heads": 2, "ffn_dim": 8, "num_radial": 4, "readout_hidden": 8,
        "cutoff": 3.0}


def test_pet_trained_with_rotations_is_more_nearly_invariant(toy_db):
    """300 steps of a tiny PET on the toy clusters (energies): with rotations its rotational
    error on the training and validation clusters is less than 0.6x that without (seeds 0, 1,
    2: 3.9 vs 8.0, 5.5 vs 10.6, 4.7 vs 14.3 meV/atom; 13.0, 5.6, 8.9 at initialisation); a
    rotated run is reproducible bit for bit."""
    cfg = TrainConfig(db=str(toy_db), model="pet", hypers=_PET, makeup="up_to:2", epochs=100,
                      lr=1e-2, progress=False, tensorboard=False)
    runs = {rot: train(cfg.replace(rotate=rot)) for rot in (False, True)}
    again = train(cfg.replace(rotate=True))
    assert [s["loss"] for s in again.steps] == [s["loss"] for s in runs[True].steps]
    assert [s["loss"] for s in runs[True].steps] != [s["loss"] for s in runs[False].steps]

    res = runs[False]
    clusters = [r for r in res.data.train if r.is_full] + res.data.val
    err = {rot: analysis.rotational_error(r.model.replace(params=r.params),
                                          clusters)["mean_std_mev_per_atom"]
           for rot, r in runs.items()}
    assert err[True] < 0.6 * err[False], err


def test_checkpoints_from_before_the_option_still_resume():
    """A config saved before ``rotate`` existed equals today's default config."""
    saved = TrainConfig().to_dict()
    del saved["rotate"]
    assert config_diff(saved, TrainConfig().to_dict()) == []
    assert config_diff(saved, TrainConfig(rotate=True).to_dict()) == ["rotate"]
