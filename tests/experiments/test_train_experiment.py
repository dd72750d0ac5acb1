"""The main job (experiments/train_body_order_reg.py): --quick on a tiny labelled db, where a
quick run writes, the --regime selection, and the committed run's targets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "results" / "train_body_order_reg"

from tests.toy import write_toy_db


@pytest.mark.experiment
def test_main_job_quick_on_tiny_db(tmp_path):
    from experiments.train_body_order_reg import parse_args, run

    db = write_toy_db(tmp_path / "toy.db", train_sizes=(4, 4, 5, 5, 4), heldout_sizes=(6,),
                      forces=False)
    out = tmp_path / "out"
    summary = run(parse_args([
        "--quick", "--db", str(db), "--out", str(out), "--epochs", "2", "--order", "2",
        "--regime", "both",
        "--hypers", json.dumps({"max_radial": 2, "max_angular": 1, "hidden": [4]})]))
    saved = json.loads((out / "summary.json").read_text())
    assert saved["K"] == 2 and set(saved["runs"]) == {"plain", "regularized"}
    assert saved["regime"] == "both"
    c = saved["comparison"]
    assert c["val_mae_ratio_regularized_to_plain"] == pytest.approx(
        saved["runs"]["regularized"]["val_mae_mev_per_atom"]
        / saved["runs"]["plain"]["val_mae_mev_per_atom"], rel=1e-12)
    for name in ("plain", "regularized"):
        r = saved["runs"][name]
        assert r["val_mae_mev_per_atom"] > 0
        assert len(r["test"]["spectrum"]["mean_mev_per_atom"]) == 6
        assert len(r["test"]["per_cluster"][0]["per_order_ev"]) == 6
    assert len(saved["reference"]["val"]["spectrum"]["mean_abs_mev_per_atom"]) >= 4
    assert "accuracy_cost_val_mae_mev_per_atom" in saved["comparison"]
    assert "test_high_order_sum_abs_mev_per_atom" in summary["comparison"]
    for png in ("learning_curves.png", "body_order_spectrum.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "runs" / "regularized" / "metrics.csv").exists()
    # trained to a rule with a recorded stop reason; the models ship as loadable files
    from jbo import models
    from jbo.train.loop import evaluate
    from jbo.data.records import read_records
    for name in ("plain", "regularized"):
        r = saved["runs"][name]
        assert r["stop_reason"].startswith(("converged", "budget", "schedule finished")) and r["convergence_rule"]
        assert len(r["validation_curve"]["step"]) == len(r["validation_curve"]["lr"])
        pot = models.load(out / r["model_file"])
        val = [x for x in read_records(db) if x.cluster in set(summary["val_parents"]) and x.is_full]
        assert abs(evaluate(pot, val)["mae"] - r["val_mae_mev_per_atom"]) < 1e-9


def _digests(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.mark.experiment
def test_quick_run_never_overwrites_the_committed_results(tmp_path, monkeypatch):
    """``--quick`` without ``--out`` (what CI runs) writes to a temporary folder: the committed
    results/train_body_order_reg/ (summary, models, figures) stay byte-identical."""
    import tempfile

    from experiments.train_body_order_reg import QUICK_OUT_NAME, main, parse_args

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert Path(parse_args(["--quick"]).out) == tmp_path / QUICK_OUT_NAME
    assert Path(parse_args([]).out) == COMMITTED  # the full run writes the committed results
    before = _digests(COMMITTED)
    db = write_toy_db(tmp_path / "toy.db", train_sizes=(4, 4, 5, 5, 4), heldout_sizes=(6,),
                      forces=False)
    assert main(["--quick", "--db", str(db), "--epochs", "1", "--regime", "both", "--hypers",
                 json.dumps({"max_radial": 2, "max_angular": 1, "hidden": [4]})]) == 0
    assert (tmp_path / QUICK_OUT_NAME / "summary.json").exists()
    assert _digests(COMMITTED) == before


def test_readme_refuses_a_quick_summary(capsys):
    from experiments.train_body_order_reg import main

    with pytest.raises(SystemExit) as exc:
        main(["--readme", "--quick"])
    assert exc.value.code == 2 and "drop --quick" in capsys.readouterr().err


def test_regime_selects_its_clusters_and_names_the_others():
    from experiments.train_body_order_reg import parse_args, select_regime

    recs = [SimpleNamespace(regime=g, split=s) for g in ("low", "high")
            for s in ("train", "heldout")]
    assert parse_args([]).regime == "low"  # the main job's default
    assert [(r.regime, r.split) for r in select_regime(recs, "low", "db")] == [
        ("low", "train"), ("low", "heldout")]
    assert select_regime(recs, "both", "db") == recs
    with pytest.raises(ValueError, match=r"no training clusters .* \(its regimes: high\)"):
        select_regime([r for r in recs if r.regime == "high"], "low", "db")
    # one regime holds half the parents: twice the epochs, the same number of steps
    assert parse_args([]).epochs == 2 * parse_args(["--regime", "both"]).epochs


def test_committed_main_job_meets_its_targets():
    """The committed run is the low-density default; plain validation MAE <= 10 meV/atom, the
    regularised one within 1.25x of it, and it cuts the held-out truncation error."""
    s = json.loads((COMMITTED / "summary.json").read_text())
    plain, reg = s["runs"]["plain"], s["runs"]["regularized"]
    assert s["regime"] == "low" and s["config"]["quick"] is False
    assert plain["val_mae_mev_per_atom"] <= 10.0
    assert reg["val_mae_mev_per_atom"] <= 1.25 * plain["val_mae_mev_per_atom"]
    trunc = s["comparison"]["test_high_order_truncation_mev_per_atom"]
    assert trunc["regularized"] < trunc["plain"]
    assert {c["regime"] for c in plain["test"]["per_cluster"]} == {"low"}
