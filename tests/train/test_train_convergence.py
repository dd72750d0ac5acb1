"""The convergence rule (known plateaus), budgets, EMA, option validation, clean restarts."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from jbo.cli import main
from jbo.train import RegularizerConfig, TrainConfig, TrainState, load_trained, train
from jbo.train.checkpoints import Checkpoints
from jbo.train.convergence import after_evaluation, describe
from jbo.train.loop import evaluate
from tests.toy import ToyEAM


def _cfg(db, **kw) -> TrainConfig:
    base = dict(db=str(db), model="toy", makeup="up_to:2", epochs=3, batch_size=16, lr=1e-2,
                progress=False, tensorboard=False, checkpoint_seconds=0.0)
    base.update(kw)
    return TrainConfig(**base)


def test_rule_on_a_known_plateau():
    """MAE 100, 50, 30, then a plateau within 1 % of 30: three non-improving evaluations
    after the third stop the run at the sixth; the LR halves after two of them; the best
    parameters follow every new minimum, even one too small to count as an improvement."""
    cfg = TrainConfig(patience=3, min_improvement=0.01, plateau_patience=2, plateau_factor=0.5)
    state = TrainState.initial({"w": 0.0}, {}, 0)
    scores = [100.0, 50.0, 30.0, 29.9, 29.8, 29.85, 10.0]
    reasons, scales = [], []
    for i, v in enumerate(scores):
        state, reason = after_evaluation(state, v, {"w": float(i)}, cfg)
        reasons.append(reason)
        scales.append(float(state.lr_scale))
        if reason:
            break
    assert reasons[:5] == [None] * 5 and reasons[5].startswith("converged: validation MAE did "
                                                               "not improve by more than 1%")
    assert scales == [1, 1, 1, 1, 0.5, 0.5]
    assert float(state.best_val) == 29.8 and state.best_params == {"w": 4.0}
    assert "3 evaluations" in describe(cfg) and "0.5" in describe(cfg)


def test_training_stops_on_a_flat_validation_curve(toy_db, tmp_path):
    """lr = 1e-12: the validation MAE is flat from the first evaluation, so the run stops after
    exactly 1 + patience evaluations, says why, and its checkpoint is the stopping step."""
    res = train(_cfg(toy_db, lr=1e-12, schedule="constant", epochs=50, patience=2,
                     min_improvement=1e-6, out_dir=str(tmp_path)), module=ToyEAM())
    n_batches = int(res.history[0]["step"])
    assert len(res.history) == 3 and res.stop_reason.startswith("converged")
    assert Checkpoints(tmp_path / "checkpoints").steps()[0] == 3 * n_batches
    vals = [h["val_mae"] for h in res.history]
    np.testing.assert_allclose(vals, vals[0], rtol=1e-6)


def test_plateau_lowers_the_learning_rate_and_budgets_say_so(toy_db):
    res = train(_cfg(toy_db, lr=1e-12, schedule="constant", epochs=4, plateau_patience=1,
                     plateau_factor=0.1), module=ToyEAM())
    lrs = [h["lr"] for h in res.history]
    np.testing.assert_allclose(lrs, [1e-12, 1e-13, 1e-14, 1e-15], rtol=1e-12)
    assert res.stop_reason == "budget: 4 epochs done"
    short = train(_cfg(toy_db, max_seconds=1e-9), module=ToyEAM())
    assert short.stop_reason.startswith("budget: max_seconds=1e-09 reached")


def test_a_finished_decaying_schedule_reports_its_plateau(toy_db):
    """The end of a cosine schedule is not a bare budget: the reason gives the best MAE and how
    many of the evaluations came after the last one that improved it by min_improvement."""
    res = train(_cfg(toy_db, epochs=4, eval_every=2, min_improvement=0.01), module=ToyEAM())
    vals = [h["val_mae"] for h in res.history]
    best, since = vals[0], 0
    for v in vals[1:]:  # the rule of jbo.train.convergence, recomputed from the curve
        since = 0 if v < best * (1 - 0.01) else since + 1
        best = min(best, v)
    assert res.stop_reason == (f"schedule finished (cosine over 4 epochs): best validation MAE "
                               f"{best:.4g} meV/atom, {since} of {len(vals)} evaluations since "
                               f"one improved it by more than 1%")


def test_ema_parameters_are_the_evaluated_ones(toy_db):
    res = train(_cfg(toy_db, ema_decay=0.9, epochs=2), module=ToyEAM())
    s = res.state
    diff = max(float(np.abs(a - b).max()) for a, b in
               zip(jax_leaves(s.ema), jax_leaves(s.params)))
    assert diff > 1e-6
    val = evaluate(res.model.replace(params=s.ema), res.data.val)["mae"]
    np.testing.assert_allclose(res.history[-1]["val_mae"], val, rtol=1e-10)


def jax_leaves(tree):
    import jax
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_validation_and_checkpoints_follow_their_schedule(toy_db, tmp_path):
    """eval_every=2 over 9 steps: validations after steps 2, 4, 6, 8 and at the budget stop
    (9), so the last parameters are always validated; with a checkpoint floor longer than the
    run only the final step is checkpointed."""
    res = train(_cfg(toy_db, eval_every=2, checkpoint_seconds=1e6, out_dir=str(tmp_path)),
                module=ToyEAM())
    assert [int(h["step"]) for h in res.history] == [2, 4, 6, 8, 9] and len(res.steps) == 9
    assert Checkpoints(tmp_path / "checkpoints").steps() == [9]


BAD = [("lr", -1.0), ("lr", float("nan")), ("lr", 0.0), ("patience", 0),
       ("val_fraction", 2.0), ("val_fraction", 1.0), ("batch_size", 0), ("epochs", 2.5),
       ("max_steps", 0), ("max_seconds", -1.0), ("ema_decay", 1.0), ("plateau_factor", 1.5),
       ("grad_clip", float("inf")), ("force_weight", -0.1), ("eval_every", 0),
       ("log_every", 0), ("min_improvement", 1.0), ("seed", -1), ("makeup", "dimers"),
       ("hypers", "max_radial=4")]


@pytest.mark.parametrize("name,value", BAD)
def test_bad_training_options_are_refused_in_the_config(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be|unknown dataset {name}"):
        TrainConfig(**{name: value})


def test_bad_regularizer_options_are_refused():
    with pytest.raises(ValueError, match="lam must be"):
        RegularizerConfig(lam=float("nan"))
    with pytest.raises(ValueError, match="both 0"):
        TrainConfig(energy_weight=0.0, force_weight=0.0)


@pytest.mark.parametrize("flag,value,phrase", [("--lr", "-1", "lr must be"),
                                               ("--lr", "nan", "lr must be"),
                                               ("--patience", "0", "patience must be"),
                                               ("--val-fraction", "2", "val_fraction must be"),
                                               ("--hypers", "{x", "not valid JSON")])
def test_cli_refuses_bad_options_before_reading_data(flag, value, phrase, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--db", str(tmp_path / "missing.db"), "--out", str(tmp_path / "r"),
              flag, value])
    assert exc.value.code == 2
    assert phrase in capsys.readouterr().err


def test_no_resume_starts_clean_and_stale_checkpoints_are_not_loaded(toy_db, tmp_path):
    """A second run with resume=False in the same folder moves the first run's (higher-step)
    checkpoints aside, so loading the folder gives the new run; a stale step left in the
    checkpoint folder is refused instead of loaded silently."""
    out = tmp_path / "run"
    train(_cfg(toy_db, out_dir=str(out), epochs=3), module=ToyEAM())
    with pytest.warns(UserWarning, match="moved the earlier checkpoints"):
        new = train(_cfg(toy_db, out_dir=str(out), epochs=1, lr=2e-2, resume=False),
                    module=ToyEAM())
    ckpt = Checkpoints(out / "checkpoints")
    assert ckpt.steps() == [int(new.history[-1]["step"])]
    assert len(list(out.glob("checkpoints.replaced-*"))) == 1
    trained = load_trained(out, module=ToyEAM())
    assert trained.meta["config"]["lr"] == 2e-2
    # the old run's config.json left beside the new checkpoints: refused, not loaded
    (out / "config.json").write_text(json.dumps(_cfg(toy_db, out_dir=str(out)).to_dict()))
    with pytest.raises(ValueError, match=r"written by another run .*\['lr'\]"):
        load_trained(out, module=ToyEAM())


def test_junk_step_folder_does_not_occupy_a_kept_slot(tmp_path):
    (tmp_path / "c" / "17").mkdir(parents=True)
    with pytest.warns(RuntimeWarning, match="not a checkpoint"):
        ckpt = Checkpoints(tmp_path / "c", keep=2)
    for s in (1, 2, 3):
        ckpt.save(s, {"a": np.full(2, float(s))}, {"x": s})
    assert ckpt.steps() == [3, 2]
    assert (tmp_path / "c.junk").is_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Checkpoints(tmp_path / "c").steps() == [3, 2]
