"""Training loop: loss decreases, exact resume, NaN stop, corrupt checkpoints, float32, sharding."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import numpy as np
import pytest

from jbo.data.records import read_records
from jbo.train import (CheckpointError, Checkpoints, RegularizerConfig, TrainingDiverged,
                       train)
from jbo.train.dataset import batch_indices
from jbo.train.metrics import read_csv
from tests.toy import ToyEAM, toy_config


def test_loss_decreases_and_logs(toy_db, tmp_path):
    res = train(toy_config(toy_db, out_dir=str(tmp_path), tensorboard=True), module=ToyEAM())
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 3 and losses[2] < losses[1] < 0.9 * losses[0]
    assert np.isfinite(res.history[-1]["val_mae"]) and res.history[-1]["reg"] > 0
    rows = read_csv(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == list(range(3))
    assert len(read_csv(tmp_path / "steps.csv")) == res.history[-1]["step"]
    assert any((tmp_path / "tensorboard").iterdir())
    assert all(r.split == "train" and r.cluster not in res.data.val_parents
               for r in res.data.train)


# the loop before it ran many steps per dispatch (main at f082889, toy_config(toy_db), seed 0): the
# per-step losses and per-epoch validation MAEs (meV/atom) of the 9-step run
OLD_LOOP_LOSS = [2.277196776583527, 6.298751685287593, 6.132740681604856, 3.982126188976861,
                 2.9798927929508046, 6.241411438520865, 2.4207473327878524, 3.9409977224280284,
                 6.064289244575335]
OLD_LOOP_VAL = [4.826466264102436, 0.14911308739407048, 1.5129101103728004]


def roundoff_rtol(res) -> float:
    """The relative round-off of a toy run's losses and validation MAEs, from its arithmetic.

    Every energy is a sum of terms of size |E|/n (~14 eV/atom here) and carries an absolute
    round-off of about eps |E|/n per operation; the losses and MAEs are differences of such
    energies from the labels, as small as min(val MAE) (0.15 meV/atom), so their relative
    round-off is eps (|E|/n) / min(MAE) (~2e-11) per operation. A budget of 1000 operations
    (pair sums, exp, nine Adam steps) gives ~2e-8: another machine's XLA (same jax/numpy)
    differed by 5.7e-12, while a change of the data order, schedule or loss moves the curve
    by more than 1e-3. Loop variants run in one process agree bit for bit today, but XLA may
    compile them differently, so they are held to the same bound.
    """
    eps = np.finfo(np.float64).eps
    per_atom = max(abs(r.energy) / r.n_atoms for r in res.data.train + res.data.val)
    smallest = 1e-3 * min(h["val_mae"] for h in res.history)  # eV/atom
    return 1000 * eps * per_atom / smallest


@pytest.mark.parametrize("log_every", [64, 2])
def test_loss_curve_matches_the_per_step_loop(toy_db, log_every):
    """Steps dispatched in chunks over device-resident data reproduce the old per-step loop's
    loss curve and validation MAEs to float64 round-off (forces and regularizer on), and
    agree with one step per dispatch run in this process."""
    res = train(toy_config(toy_db, log_every=log_every), module=ToyEAM())
    rtol = roundoff_rtol(res)
    assert 1e-10 < rtol < 1e-7
    np.testing.assert_allclose([s["loss"] for s in res.steps], OLD_LOOP_LOSS, rtol=rtol)
    np.testing.assert_allclose([h["val_mae"] for h in res.history], OLD_LOOP_VAL, rtol=rtol)
    one = train(toy_config(toy_db, log_every=1), module=ToyEAM())
    np.testing.assert_allclose([s["loss"] for s in res.steps], [s["loss"] for s in one.steps],
                               rtol=rtol)
    assert res.stop_reason.startswith("schedule finished (cosine over 3 epochs)")


def test_resume_is_exact_after_interruption_at_random_step(toy_db, tmp_path):
    """Interrupted at a random step (checkpoints only at epoch ends) and resumed: every
    per-step loss of the uninterrupted run is reproduced bit for bit."""
    straight = train(toy_config(toy_db, out_dir=str(tmp_path / "a")), module=ToyEAM())
    n_steps = len(straight.steps)
    stop_at = int(np.random.default_rng().integers(2, n_steps))

    def interrupt(step, _):
        if step == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(toy_config(toy_db, out_dir=str(tmp_path / "b")), module=ToyEAM(), on_step=interrupt)
    resumed = train(toy_config(toy_db, out_dir=str(tmp_path / "b")), module=ToyEAM())
    a = read_csv(tmp_path / "a" / "steps.csv")
    b = read_csv(tmp_path / "b" / "steps.csv")
    assert a == b, f"resumed after step {stop_at} differs"
    assert resumed.steps == straight.steps
    assert [h["train_loss"] for h in resumed.history] == \
        [h["train_loss"] for h in straight.history]
    for x, y in zip(jax.tree_util.tree_leaves(straight.params),
                    jax.tree_util.tree_leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_max_steps_then_resume_matches(toy_db, tmp_path):
    full = train(toy_config(toy_db), module=ToyEAM())
    cfg = toy_config(toy_db, out_dir=str(tmp_path), checkpoint_every=1)
    first = train(cfg.replace(max_steps=3), module=ToyEAM())
    assert first.stop_reason == "budget: max_steps=3 reached" and len(first.steps) == 3
    second = train(cfg, module=ToyEAM())
    assert [s["loss"] for s in second.steps] == [s["loss"] for s in full.steps]


def test_nan_loss_stops_naming_batch_and_keeps_checkpoint(toy_db, tmp_path):
    records = read_records(toy_db)
    cfg = toy_config(toy_db, out_dir=str(tmp_path), checkpoint_every=1)
    from jbo.train import dataset as ds
    train_rows = ds.prepare(cfg, records).train
    third = batch_indices(len(train_rows), cfg.batch_size, cfg.seed, 0)[2]
    bad = next(train_rows[i] for i in third if not train_rows[i].is_full)  # not in reg batches
    # a corrupted force label (a NaN geometry is refused before training starts)
    nan_f = np.full_like(bad.forces, np.nan)
    records = [r if r is not bad else dataclasses.replace(r, forces=nan_f) for r in records]
    with pytest.raises(TrainingDiverged, match=rf"step 3 .*{bad.cluster}\[subset={bad.subset}\]"):
        train(cfg, module=ToyEAM(), records=records)
    ckpt = Checkpoints(tmp_path / "checkpoints")
    assert ckpt.steps()[0] == 2
    state, _, step = ckpt.restore()
    assert step == 2
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state["params"]))


def test_corrupt_checkpoint_falls_back_to_previous(toy_db, tmp_path):
    cfg = toy_config(toy_db, max_steps=3, out_dir=str(tmp_path), checkpoint_every=1)
    train(cfg, module=ToyEAM())
    ckpt = Checkpoints(tmp_path / "checkpoints")
    assert ckpt.steps() == [3, 2, 1]
    for f in (tmp_path / "checkpoints" / "3").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\x00garbage")
    with pytest.warns(RuntimeWarning, match=r"checkpoints/3 is unreadable"):
        _, _, step = ckpt.restore()
    assert step == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = train(cfg.replace(max_steps=4), module=ToyEAM())
    assert [s["step"] for s in res.steps] == [1, 2, 3, 4]
    ckpt = Checkpoints(tmp_path / "checkpoints")
    assert ckpt.steps() == [4, 3, 2]
    for f in (tmp_path / "checkpoints").rglob("*"):
        if f.is_file() and f.parent.name != "checkpoints":
            f.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="no readable checkpoint"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ckpt.restore()


def test_float32_training_with_amortized_masks_regularizer(toy_db):
    reg = RegularizerConfig(lam=0.05, order=2, batch_size=2, every=2, backend="masks")
    res = train(toy_config(toy_db, dtype="float32", force_weight=0.0, regularizer=reg),
                module=ToyEAM())
    leaves = jax.tree_util.tree_leaves(res.params)
    assert all(x.dtype == np.float32 for x in leaves)
    assert np.isfinite(res.history[-1]["train_loss"])
    pen = np.array([s["reg"] for s in res.steps])  # evaluated on 0-based steps 0, 2, 4, ...
    assert np.all(pen[0::2] > 0) and np.all(pen[1::2] == 0)
    total = np.array([s["loss"] - s["energy_loss"] for s in res.steps])
    np.testing.assert_allclose(total, 0.05 * 2 * pen, rtol=1e-6, atol=1e-12)


def test_config_errors_are_clear(toy_db, tmp_path):
    with pytest.raises(ValueError, match="makeup"):
        train(toy_config(toy_db, makeup="dimers"), module=ToyEAM())
    with pytest.raises(ValueError, match="dtype"):
        toy_config(toy_db, dtype="float16")
    train(toy_config(toy_db, max_steps=1, out_dir=str(tmp_path)), module=ToyEAM())
    with pytest.raises(ValueError, match=r"cannot resume .*\['lr'\]"):
        train(toy_config(toy_db, lr=0.5, out_dir=str(tmp_path)), module=ToyEAM())


def test_sharded_matches_single_device(toy_db, eight_devices):
    """8 fake CPU devices (batch split, params replicated; forces and the regularizer on)
    give the single-device losses and validation errors to rounding."""
    single = train(toy_config(toy_db), module=ToyEAM())  # same spec as the other tests: compiled
    sharded = eight_devices["train"]
    np.testing.assert_allclose(sharded["steps"], [s["loss"] for s in single.steps], rtol=1e-9)
    np.testing.assert_allclose(sharded["val"], [h["val_mae"] for h in single.history],
                               rtol=1e-9)
