"""Quick modes of the studies (``python -m experiments.NAME --quick``) on the shipped dataset,
and the pure helpers they share. The quick runs are marked ``experiment`` (in the default run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import common

HAVE_DB = Path(common.DEFAULT_DB).exists()
needs_db = pytest.mark.skipif(not HAVE_DB, reason="data/h_clusters.db is not shipped yet")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("studies")


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------- pure helpers
def test_metrics_on_hand_made_cell():
    t = dict(n=[2, 4], total=[-1.0, -2.0], ref_total=[-1.002, -2.0],
             per_order=[[-1.0, 0.0], [-2.5, 0.4, 0.1, 0.0]],
             ref_per_order=[[-0.9, -0.102], [-2.5, 0.5, 0.0, 0.0]])
    assert np.allclose(common.total_errors(t), [1.0, 0.0])
    assert common.total_mae(t) == pytest.approx(0.5)
    mae = common.order_mae(t, 3)
    assert mae[0] == pytest.approx(1e3 * 0.1 / 2 / 2)
    assert mae[2] == pytest.approx(1e3 * 0.1 / 4)  # only the 4-atom cluster has k = 3
    assert common.high_order_weight(t["per_order"]) == pytest.approx(0.1 / 0.5)
    assert common.mean_abs_order(t["per_order"], t["n"], 1)[0] == pytest.approx(1e3 * 0.5625)


def test_cell_keys_and_cache(tmp_path):
    a = common.Cell("pet", "up_to:4+atoms", None, 0)
    b = common.Cell("pet", "up_to:4+atoms", 8, 0, lam=0.1, regimes=("low",))
    assert a.key() != b.key() and "/" not in b.key() and ":" not in b.key()
    cache = common.CellCache(tmp_path / "a", fallbacks=[tmp_path / "b"])
    assert cache.get(a.key()) is None
    common.CellCache(tmp_path / "b").put(a.key(), {"x": 1})
    assert cache.get(a.key()) == {"x": 1}  # found in the fallback folder
    cache.put(a.key(), {"x": 2})
    assert cache.get(a.key()) == {"x": 2}
    assert common.CellCache(tmp_path / "a", redo=True).get(a.key()) is None


def test_plots_write_pngs(tmp_path):
    from jbo import plots

    p = plots.curve_grid({"a": {"s": ([1, 2, 3], [1.0, 0.1, 0.0])}}, tmp_path / "c.png", "k",
                         "meV", logy=True, sharey=True)
    q = plots.parity_grid({"E1": {"s": ([1, 2], [1.1, 1.9])}}, tmp_path / "p.png", "x", "y")
    r = plots.bars({"g": {"a": 1.0, "b": 2.0}}, tmp_path / "b.png", "meV")
    for f in (p, q, r):
        assert f.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- quick modes
@pytest.mark.experiment
@needs_db
def test_reference_mbe_quick(out):
    from experiments import reference_mbe

    reference_mbe.main(["--quick", "--out", str(out / "reference_mbe")])
    r = _load(out / "reference_mbe" / "reference_mbe.json")
    st = r["stored"]
    assert st["n_clusters"] > 0 and st["max_sum_error_eV"] < 1e-8
    assert set(st["regimes"]) >= {"low", "high"}
    lim = next(iter(r["atomic_limit"]["clusters"].values()))
    fci, rhf = lim[reference_mbe.METHODS[0]][-1], lim[reference_mbe.METHODS[2]][-1]
    assert abs(fci["binding"]) < 1e-6 and max(map(abs, fci["per_order"][1:])) < 1e-6
    assert abs(rhf["binding"]) > 0.1  # the naive choice is not size-consistent
    assert all((out / "reference_mbe" / f).exists() for f in r["figures"])


@pytest.mark.experiment
@needs_db
def test_body_order_trends_quick(out):
    from experiments import body_order_trends

    r = body_order_trends.main(["--quick", "--out", str(out / "body_order_trends")])
    assert len(r["summary"]) == 2 and r["figures"]
    cell = _load(out / "body_order_trends" / "cells" / f"{r['cells'][0]}.json")
    t = cell["tests"]["test"]
    assert len(t["n"]) > 0
    for p, total, n in zip(t["per_order"], t["total"], t["n"]):
        assert len(p) == n and abs(sum(p) - total) < 1e-8  # the model's E^(k) sum to its E
    for r_, ref in zip(t["ref_per_order"], t["ref_total"]):
        assert abs(sum(r_) - ref) < 1e-8
    s = r["summary"][0]
    assert np.isfinite(s["total_mae"]) and 0 <= s["high_order_weight"] <= 1
    # resumable: a second run loads every cell from the cache
    again = body_order_trends.main(["--quick", "--out", str(out / "body_order_trends")])
    assert json.dumps(again["summary"]) == json.dumps(r["summary"])


@pytest.mark.experiment
@needs_db
def test_learning_curves_quick(out):
    from experiments import learning_curves

    r = learning_curves.main(["--quick", "--out", str(out / "learning_curves")])
    rows = r["rows"]
    assert [x["n_train_parents"] for x in rows] == [2, 6]
    assert rows[0]["n_train_rows"] < rows[1]["n_train_rows"]
    assert all(np.isfinite(x["total_mae"]) and x["total_mae"] > 0 for x in rows)


@pytest.mark.experiment
@needs_db
def test_generalization_quick(out):
    from experiments import generalization

    r = generalization.main(["--quick", "--out", str(out / "generalization")])
    (row,) = r["rows"]
    assert row["train_regime"] == "low" and np.isfinite(row["test_mae"])
    assert np.isfinite(row["other_regime_mae"]) and np.isfinite(row["heldout_mae"])
    assert 0 <= row["high_order_weight"] <= 1


@pytest.mark.experiment
@needs_db
def test_report_quick(out):
    from experiments import report

    text = report.main(["--quick", "--results", str(out), "--out", str(out)])
    assert (out / "REPORT.md").exists()
    for i, study in enumerate(report.STUDIES):  # a section for every study that ran
        assert ((out / study).exists()) == (f"## {i + 1}." in text)
    assert "![" in text
