"""The converged study (experiments.converged): a quick run writes cells, shipped models, JSON,
figures and the report section; it resumes without training; a shipped model reproduces its
cell's stored per-order energies; and the pure pieces (effective order, stop kinds, the
validation split of a capped training set) against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import common
from jbo.study.converged import plateau, stop_kind
from experiments.converged_summary import effective_order

HAVE_DB = Path(common.DEFAULT_DB).exists()
needs_db = pytest.mark.skipif(not HAVE_DB, reason="data/h_clusters.npz is not shipped")


# ---------------------------------------------------------------- pure pieces
def test_effective_order_is_the_first_order_whose_tail_is_below_the_threshold():
    # tails Σ_{j>k}: k=1: 3.5, k=2: 1.5, k=3: 0.5, k=4: 0
    assert effective_order([100.0, 2.0, 1.0, 0.5]) == 3
    assert effective_order([100.0, 2.0, 1.0, 0.5], threshold=0.4) == 4
    assert effective_order([100.0, 2.0, 1.0, 0.5], threshold=2.0) == 2
    assert effective_order([5.0, np.nan, np.nan]) == 1   # unknown orders count as 0
    assert effective_order([5.0, 0.9, 0.05]) == 1        # 0.95 < 1


def test_stop_kinds_and_plateau():
    assert stop_kind("converged: validation MAE did not improve by more than 0.5% in 10 "
                     "evaluations (best 10.92 meV/atom)") == "converged"
    with pytest.raises(ValueError, match="unknown stop reason"):  # no guessing from a prefix
        stop_kind("converged: validation MAE did not improve ...")
    assert stop_kind("budget: 12 epochs done") == "schedule"
    assert stop_kind("schedule finished (cosine over 69 epochs): best validation MAE 7.6 "
                     "meV/atom, 7 of 40 evaluations since one improved it by more than 0.5%"
                     ) == "schedule"
    assert stop_kind("budget: max_seconds=240 reached at step 900") == "budget"
    assert stop_kind("budget: max_steps=24 reached") == "budget"
    # best-so-far 10, 8, 8, 8, 8, 8, 7.6, 7.6: last quarter (2 evals) from 8 to 7.6 = 5%
    assert plateau([10, 8, 9, 8.5, 8, 8.2, 7.6, 7.7]) == pytest.approx(0.05)
    assert plateau([3.0, 2.0, 1.0, 1.0, 1.0]) == 0.0
    assert np.isnan(plateau([3.0, 2.0]))


def test_accuracy_table_takes_the_best_seed_mean_of_the_full_makeup():
    from experiments.converged_summary import accuracy_table

    def row(model, seed, mae, makeup="full", n_train=None, lam=0.0, kind="converged"):
        return dict(model=model, seed=seed, regime="high", makeup=makeup, n_train=n_train,
                    lam=lam, test_mae=mae, stop_kind=kind, steps=100 * (seed + 1),
                    train_seconds=10.0, max_seconds=300.0, best_val_mae=mae - 1,
                    device="cpu:cpu x1", train_mae=mae - 2, force_weight=0.1, ema_decay=0.0,
                    hypers="num_channels=32" if model == "a" else "")

    rows = [row("a", 0, 30.0), row("a", 1, 20.0, kind="budget"), row("b", 0, 24.0),
            row("b", 1, 27.0), row("c", 0, 1.0, makeup="all"), row("c", 1, 1.0, n_train=50),
            row("c", 2, 1.0, lam=1.0)]
    (t,) = accuracy_table(rows)
    assert t["regime"] == "high" and t["target"] == 25.0 and set(t["models"]) == {"a", "b"}
    assert t["best_model"] == "a" and t["best_mae"] == 25.0 and t["meets_target"]
    a = t["models"]["a"]
    assert a["test_mae_sd"] == pytest.approx(np.std([30.0, 20.0], ddof=1))
    assert a["stop_kinds"] == ["budget", "converged"] and a["steps"] == 150 and a["n_seeds"] == 2
    assert a["train_mae"] == 23.0 and a["force_weight"] == 0.1 and a["ema_decay"] == 0.0
    assert a["hypers"] == "num_channels=32" and t["models"]["b"]["hypers"] == ""


@needs_db
def test_a_capped_training_set_keeps_the_selected_validation_parents():
    """train() re-splits the records it is given: with the returned fraction its hash split
    must give back exactly the validation parents selected before the cap."""
    from jbo.study.regimes import load_regimes, training_rows
    from jbo.train.dataset import split_by_cluster

    data = load_regimes(common.DEFAULT_DB)
    assert set(data.test_parents["low"]) <= set(data.complete["low"])
    assert not set(data.test_parents["low"]) & set(data.train_parents("low"))
    for makeup, n in (("full", 100), ("up_to:4+atoms", 300), ("all", None)):
        rows, val, val_parents, frac = training_rows(data, "low", makeup, 0.1, 0, n, 1)
        assert n is None or len(rows) == n
        assert all(r.regime == "low" and r.cluster not in data.test_parents["low"]
                   for r in rows + val)
        _, again = split_by_cluster(rows + val, frac, 0)
        assert sorted(again) == val_parents and all(r.is_full for r in val)
        assert not {r.cluster for r in rows} & set(val_parents)


# ---------------------------------------------------------------- the quick study
@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from experiments import converged
    results = tmp_path_factory.mktemp("results")
    res = converged.main(["--quick", "--out", str(results / "converged")])
    return results, res


@pytest.mark.experiment
@needs_db
def test_quick_run_writes_cells_models_json_and_figures(quick):
    results, res = quick
    out = results / "converged"
    assert res["trained"] == 1 and len(res["cells"]) == 1
    key = res["cells"][0]
    cell = json.loads((out / "cells" / f"{key}.json").read_text())
    assert (out / cell["model_path"]).stat().st_size == cell["model_bytes"] < 100_000
    assert json.loads((out / "converged.json").read_text())["cells"] == [key]
    assert res["figures"] and all((out / f).exists() for f in res["figures"])
    assert "validation_curves.png" in res["figures"]  # the curve behind each table entry
    assert cell["steps"] == 24 and cell["stop_kind"] == "budget"
    assert len(cell["val_curve"]["mae"]) == 3 and cell["best_val_mae"] == min(
        cell["val_curve"]["mae"])
    assert set(cell["tests"]) == {"test", "other_regime", "heldout"}
    assert cell["tests"]["heldout"]["regime"] == ["low"]
    assert cell["device"].startswith(("cpu", "gpu", "cuda", "tpu"))
    # per-regime table: one entry for the one regime, the target of issue 15
    (acc,) = res["accuracy"]
    assert acc["regime"] == "low" and acc["target"] == 5.0
    assert acc["best_model"] == "linear_ace" and set(acc["models"]) == {"linear_ace"}
    m = acc["models"]["linear_ace"]
    assert m["test_mae"] == pytest.approx(res["rows"][0]["test_mae"]) and m["n_seeds"] == 1
    assert m["stop_kinds"] == ["budget"] and acc["meets_target"] == (m["test_mae"] <= 5.0)
    # linear ACE at correlation 3 has no terms above order 4 (bounded control)
    assert res["rows"][0]["effective_order"] <= 4
    assert max(res["rows"][0]["spectrum"][4:]) < 1e-6


def test_one_per_setting_keeps_the_budget_with_the_lowest_validation_mae():
    from experiments.converged_summary import one_per_setting, settings_compared

    def row(key, setting, val, test, seed=0, makeup="full"):
        return dict(key=key, setting=setting, model="m", makeup=makeup, regime="high",
                    n_train=None, lam=0.0, seed=seed, rotate=False, best_val_mae=val,
                    test_mae=test)

    rows = [row("cpu0", "cpu", 50.0, 40.0), row("gpu0", "gpu", 45.0, 60.0),
            row("cpu1", "cpu", 52.0, 41.0, seed=1), row("all", "x", 80.0, 1.0, makeup="all")]
    kept, superseded = one_per_setting(rows)
    # chosen on validation, never on test (the cpu setting has the lower test MAE), and
    # whole settings: gpu (45) beats the cpu seeds' mean (51); no seed mean mixes budgets
    assert [r["key"] for r in kept] == ["gpu0", "all"] and superseded == ["cpu0", "cpu1"]
    rows[1]["best_val_mae"] = 55.0
    kept, superseded = one_per_setting(rows)
    assert [r["key"] for r in kept] == ["cpu0", "cpu1", "all"] and superseded == ["gpu0"]
    # the settings chosen among, each with its seed means (the single-setting group is left out)
    for r in rows:
        r.update(steps=100, force_weight=1.0, ema_decay=0.0, device="cpu", train_mae=1.0,
                 hypers="")
    got = settings_compared(rows)
    assert [(r["setting"], r["n_seeds"], r["best_val_mae"], r["test_mae"], r["kept"])
            for r in got] == [("cpu", 2, 51.0, 40.5, True), ("gpu", 1, 55.0, 60.0, False)]


@pytest.mark.experiment
@needs_db
def test_second_run_loads_every_cell_and_trains_nothing(quick, monkeypatch):
    import jbo.train
    from experiments import converged

    results, first = quick

    def no_training(*a, **k):
        raise AssertionError("a cached cell was trained again")

    monkeypatch.setattr(jbo.train, "train", no_training)
    res = converged.main(["--quick", "--out", str(results / "converged")])
    assert res["trained"] == 0 and res["cells"] == first["cells"]
    assert res["rows"][0]["test_mae"] == first["rows"][0]["test_mae"]


def test_hypers_reach_every_cell_and_a_wrong_name_is_refused_before_training():
    from experiments import converged
    base = ["--models", "mace", "--makeups", "full", "--regimes", "high", "--lc-models", "",
            "--reg-models", ""]
    (plain,) = converged.grid(converged.parse(base))
    (wide,) = converged.grid(converged.parse(base + ["--hypers", '{"num_channels": 32}']))
    assert wide.extra_hypers == (("num_channels", 32),) and wide.hypers()["num_channels"] == 32
    assert plain.extra_hypers == () and wide.key() != plain.key()
    with pytest.raises(ValueError, match="num_chanels.*valid:.*num_channels"):
        converged.grid(converged.parse(base + ["--hypers", '{"num_chanels": 32}']))


@pytest.mark.experiment
@needs_db
def test_train_mae_is_the_shipped_models_error_on_its_training_clusters(quick, tmp_path,
                                                                        monkeypatch):
    """train_mae against a per-structure evaluation of the model file on the cell's training
    rows; a cell stored before the metric existed gets it from its model file, untrained."""
    import shutil

    import jbo.train
    from experiments import converged
    from jbo.study import Cell
    from jbo.study.regimes import load_regimes, training_rows
    from jbo import models

    results, res = quick
    out = tmp_path / "converged"
    shutil.copytree(results / "converged", out)
    path = out / "cells" / f"{res['cells'][0]}.json"
    cell = json.loads(path.read_text())
    c = Cell.from_json({**cell["cell"], "extra_hypers": ()})
    rows = [r for r in training_rows(load_regimes(common.DEFAULT_DB), c.regime, c.makeup,
                                     c.val_fraction, c.split_seed, c.n_train, c.seed)[0]
            if r.is_full]
    pot = models.load(out / cell["model_path"])
    want = 1e3 * np.mean([abs(float(pot(r.positions, r.species)) - r.energy) / r.n_atoms
                          for r in rows])
    assert cell["train_mae"] == pytest.approx(want, rel=1e-9)
    assert res["accuracy"][0]["models"]["linear_ace"]["train_mae"] == cell["train_mae"]
    del cell["train_mae"]
    path.write_text(json.dumps(cell))
    monkeypatch.setattr(jbo.train, "train", lambda *a, **k: pytest.fail("trained again"))
    again = converged.main(["--quick", "--out", str(out)])
    assert json.loads(path.read_text())["train_mae"] == pytest.approx(want, rel=1e-9)
    assert again["rows"][0]["train_mae"] == pytest.approx(want, rel=1e-9)


@pytest.mark.experiment
@needs_db
def test_cached_only_summarises_every_stored_cell_of_this_data(quick, tmp_path):
    """--cached-only reports the cells on disk whatever grid the flags name, and leaves out a
    stored cell whose key its own fields no longer give (other code or data)."""
    import shutil

    from experiments import converged

    results, first = quick
    out = tmp_path / "converged"
    shutil.copytree(results / "converged" / "cells", out / "cells")
    shutil.copytree(results / "converged" / "models", out / "models")
    (key,) = first["cells"]
    stale = json.loads((out / "cells" / f"{key}.json").read_text())
    stale["cell"]["seed"] = 99  # fields that no longer hash to the file's key
    (out / "cells" / "linear_ace_low_full_nall_s99_0000000000.json").write_text(
        json.dumps(stale))
    res = converged.main(["--cached-only", "--models", "pet", "--regimes", "high",
                          "--out", str(out)])
    assert res["cells"] == [key] and res["trained"] == 0 and res["superseded"] == []


@pytest.mark.experiment
@needs_db
def test_train_only_ships_models_that_a_later_run_evaluates_without_training(
        quick, tmp_path, monkeypatch):
    """The GPU split: ``--train-only`` writes the model file (with its training record) and no
    cell; a later run evaluates that file instead of training, to the same numbers."""
    import jbo.train
    from experiments import converged

    _, first = quick
    out = tmp_path / "converged"
    assert converged.main(["--quick", "--train-only", "--out", str(out)]) == {
        "trained": first["cells"]}
    (key,) = first["cells"]
    assert (out / "models" / f"{key}.jbo").exists() and not list(out.glob("cells/*.json"))

    def no_training(*a, **k):
        raise AssertionError("a shipped model was trained again")

    monkeypatch.setattr(jbo.train, "train", no_training)
    res = converged.main(["--quick", "--out", str(out)])
    cell = json.loads((out / "cells" / f"{key}.json").read_text())
    assert res["trained"] == 1 and cell["steps"] == 24 and cell["stop_kind"] == "budget"
    assert res["rows"][0]["test_mae"] == pytest.approx(first["rows"][0]["test_mae"], rel=1e-9)
    # a file that belongs to another cell is refused, not evaluated as that cell
    from jbo.study import Cell
    from jbo.study.converged import evaluate_cell
    from jbo.study.regimes import load_regimes
    with pytest.raises(ValueError, match="no training record of cell"):
        evaluate_cell(Cell.converged("linear_ace", seed=7), load_regimes(common.DEFAULT_DB),
                      out / "models" / f"{key}.jbo")


@pytest.mark.experiment
@needs_db
def test_shipped_model_reproduces_its_stored_per_order_energies(quick):
    """The committed check numbers (3 test parents) from the model file alone, to 1e-6 eV:
    through the engine, and the totals also by calling the potential directly."""
    from jbo.study.regimes import load_regimes
    from jbo import analysis, models

    results, res = quick
    out = results / "converged"
    cell = json.loads((out / "cells" / f"{res['cells'][0]}.json").read_text())
    check = cell["check"]
    assert len(check["cluster"]) == 3
    pot = models.load(out / cell["model_path"])
    data = load_regimes(common.DEFAULT_DB)
    by_name = {**data.full, **{r.cluster: r for r in data.heldout}}
    # every stored test cluster, decomposed in the order the study did (one compiled program)
    names = [c for k in ("test", "other_regime", "heldout") for c in cell["tests"][k]["cluster"]]
    got = analysis.decompose_records(pot, [by_name[c] for c in names])
    stored = [p for k in ("test", "other_regime", "heldout") for p in cell["tests"][k]["per_order"]]
    for i, c in enumerate(names):
        np.testing.assert_allclose(got.orders[i, :len(stored[i])], stored[i], atol=1e-6, rtol=0)
    i = [names.index(c) for c in check["cluster"]]
    np.testing.assert_allclose(got.orders[i, :8], np.array(check["per_order"]), atol=1e-6,
                               rtol=0)
    recs = [by_name[c] for c in check["cluster"]]
    direct = [float(pot(r.positions, r.species)) for r in recs]
    np.testing.assert_allclose(direct, check["total"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.array(check["per_order"]).sum(1), direct, atol=1e-6, rtol=0)


@pytest.mark.experiment
@needs_db
def test_report_section_is_rebuilt_from_the_json_and_the_models(quick):
    from experiments import report

    results, res = quick
    text = report.build(results)
    assert "## Converged study: per regime" in text
    assert "| regime | model | test MAE (meV/atom) |" in text
    assert "| low | linear_ace |" in text
    assert "Shipped models: 1 of 1 cells' files" in text
    assert "## The earlier, under-fitted studies" in text
    for f in res["figures"]:
        assert f"(./converged/{f})" in text


@pytest.mark.experiment
@needs_db
def test_jbo_decompose_reads_a_shipped_model(quick, tmp_path):
    from jbo.cli import main

    results, res = quick
    path = results / "converged" / "models" / f"{res['cells'][0]}.jbo"
    assert main(["decompose", str(path), "--max-order", "2", "--json",
                 str(tmp_path / "s.json")]) == 0
    rows = json.loads((tmp_path / "s.json").read_text())
    assert rows and all(len(r["per_order_ev"]) == 2 for r in rows)


COMMITTED = common.ROOT / "results" / "converged"


@pytest.mark.skipif(not (COMMITTED / "cells").is_dir(), reason="no committed converged cells")
@needs_db
def test_committed_models_reproduce_their_committed_per_order_energies():
    """Issue 15's reload check: one shipped model per architecture (its first committed cell)
    decomposes the cell's 3 check parents to the committed E^(k), 1e-6 eV, without training."""
    from jbo.study.regimes import load_regimes
    from jbo import analysis, models

    cells = [json.loads(p.read_text()) for p in sorted((COMMITTED / "cells").glob("*.json"))]
    first = {}
    for cell in cells:
        first.setdefault(cell["cell"]["model"], cell)
    assert first, "results/converged/cells holds no cells"
    data = load_regimes(common.DEFAULT_DB)
    by_name = {**data.full, **{r.cluster: r for r in data.heldout}}
    for model, cell in first.items():
        check = cell["check"]
        pot = models.load(COMMITTED / cell["model_path"])
        got = analysis.decompose_records(pot, [by_name[c] for c in check["cluster"]])
        np.testing.assert_allclose(got.orders[:, :8], np.array(check["per_order"]), atol=1e-6,
                                   rtol=0, err_msg=f"{model}: {cell['key']}")


def test_reading_tables_state_what_changed_with_both_ends():
    """The reading is tables computed from the two studies' numbers (synthetic here): the
    earlier criterion is a column (per-order median above 3 x the total median), and each
    makeup or regulariser row names both ends; no verdict is written into prose."""
    from experiments.report_converged import reading

    def row(model, makeup, total, e2, lam=0.0, held=20.0):
        return dict(model=model, makeup=makeup, regime="low", n_train=None, lam=lam,
                    test_mae=total, test_order_mae=[0.0, e2, 3 * e2, 3 * e2],
                    heldout_mae=held, other_regime_mae=500.0, effective_order=6.0)

    means = [row("pet", "full", 5.0, 900.0), row("pet", "up_to:4+atoms", 6.0, 8.0),
             row("pet", "full", 7.0, 900.0, lam=1.0, held=9.0)]
    res = dict(means=means, accuracy=[dict(regime="low", models={"pet": dict(test_mae=5.0)})])
    earlier = dict(config=dict(steps=2000), summary=[
        dict(makeup="full", total_mae=150.0, order_mae=[1.0, 2000.0, 3000.0, 4000.0]),
        dict(makeup="up_to:2", total_mae=900.0, order_mae=[0.0] * 4)])
    t = reading(res, earlier)
    assert t["earlier_steps"] == "2000"
    assert "| earlier (regimes mixed) | 150.0 | 150.0 |" in t["totals_table"]
    assert "| low | 5.0 | 5.0 |" in t["totals_table"]
    assert "| low | 5.0 | 2700.0 | 150.0 | 3000.0 | yes |" in t["orders_table"]
    assert "| low | `up_to:4+atoms` | pet | 900.0 | 8.0 | 5.0 | 6.0 |  |" in t["makeup_table"]
    assert "| pet | low | 1 | 5.0 | 7.0 | 20.0 | 9.0 | 500.0 | 500.0 | 6.0 | 6.0 |" in \
        t["regulariser_table"]
    means[0]["test_order_mae"] = [0.0, 10.0, 10.0, 10.0]
    assert "| low | 5.0 | 10.0 | – | – | no |" in reading(res, None)["orders_table"]


@needs_db
def test_committed_cells_still_hash_to_their_keys():
    """Fields added to converged cells later (``ema_decay``) stay out of the key at their
    default, so every committed cell is still found by the grid that made it; set, they
    make a new cell."""
    import dataclasses

    from jbo.study import Cell
    from jbo.study.regimes import load_regimes

    # the cells hash the data file they were made from (results/converged/DATA.json), which
    # since the 2026-12-03 relabelling is no longer the shipped file: its spec, computed the
    # way load_regimes computes it, and the shipped file's spec must differ
    made_from = json.loads((COMMITTED / "DATA.json").read_text())["sha256"]
    spec = common.fingerprint(made_from, 0.25, 0)
    shipped = load_regimes(common.DEFAULT_DB)
    assert shipped.spec == common.fingerprint(common.file_digest(common.DEFAULT_DB), 0.25, 0)
    assert shipped.spec != spec  # a rerun on the shipped file recomputes: nothing stale reused
    cells = [json.loads(p.read_text()) for p in sorted((COMMITTED / "cells").glob("*.json"))]
    assert cells
    for c in cells:
        cell = Cell.from_json(c["cell"])
        assert cell.key(spec) == c["key"]
    assert dataclasses.replace(cell, ema_decay=0.99).key(spec) != cell.key(spec)


def test_the_seeds_of_one_setting_share_it_across_code_versions():
    """A cell stored before ``ema_decay`` existed and a new one at ema 0 are one setting."""
    from jbo.study import Cell, setting_of

    new = Cell.converged("mace", seed=1).to_json()
    old = {k: v for k, v in Cell.converged("mace").to_json().items()
           if k != "ema_decay"}
    assert setting_of(new) == setting_of(old)
    assert setting_of({**new, "ema_decay": 0.99}) != setting_of(old)
    assert setting_of({**new, "steps": 20000}) != setting_of(old)
