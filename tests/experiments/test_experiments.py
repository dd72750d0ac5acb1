"""Quick modes of the studies (``python -m experiments.NAME --quick``) on the shipped dataset,
and the pure helpers they share. The quick runs are marked ``experiment`` (in the default run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.units import Hartree

from experiments import common
from jbo.study import Cell
from jbo.study import cell as cells_mod
from jbo.study import fixed as cells
from jbo import analysis

HAVE_DB = Path(common.DEFAULT_DB).exists()
needs_db = pytest.mark.skipif(not HAVE_DB, reason="data/h_clusters.npz is not shipped yet")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("studies")


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------- pure helpers
def test_a_cells_test_set_reads_back_as_spectra():
    """A cell's JSON (model and ref_ entries, None where the reference has no MBE) gives the
    spectra the metrics of jbo.analysis take (metrics by hand: tests/analysis/test_analysis.py)."""
    t = dict(cluster=["a", "b"], n=[2, 4], regime=["low", "high"], total=[-1.0, -2.0],
             ref_total=[-1.002, -2.0], per_order=[[-1.0, 0.0], [-2.5, 0.4, 0.1, 0.0]],
             ref_per_order=[[-0.9, -0.102], None])
    model, ref = cells.spectra(t)
    assert model.clusters == ref.clusters == ("a", "b") and model.K == 4 and ref.K == 2
    assert analysis.total_mae(model, ref) == pytest.approx(0.5)
    assert analysis.order_mae(model, ref, 2) == pytest.approx([1e3 * 0.1 / 2, 1e3 * 0.102 / 2])
    assert {**model.to_json(), "ref_total": ref.to_json()["total"],
            "ref_per_order": ref.to_json()["per_order"]} == t


def test_cell_key_covers_everything_that_decides_the_result(monkeypatch):
    """Edited study hyperparameters, a --use-bias override or other data never reuse a cell."""
    import dataclasses

    a = Cell("soap_bpnn", makeup="full")
    key = a.key("data-1")
    assert key == Cell("soap_bpnn", makeup="full").key("data-1")
    assert key != a.key("data-2")
    assert key != dataclasses.replace(a, extra_hypers=(("use_bias", True),)).key("data-1")
    edited = {**cells_mod.STUDY_HYPERS.get("soap_bpnn", {}), "hidden": (3,)}
    monkeypatch.setitem(cells_mod.STUDY_HYPERS, "soap_bpnn", edited)
    assert a.key("data-1") != key


def test_cell_keys_and_cache(tmp_path):
    a = Cell("pet", makeup="up_to:4+atoms")
    b = Cell("pet", makeup="up_to:4+atoms", n_train=8, lam=0.1, regimes=("low",))
    assert a.key() != b.key() and "/" not in b.key() and ":" not in b.key()
    cache = common.CellCache(tmp_path / "a", fallbacks=[tmp_path / "b"])
    assert cache.get(a.key()) is None
    common.CellCache(tmp_path / "b").put(a.key(), {"x": 1})
    assert cache.get(a.key()) == {"x": 1}  # found in the fallback folder
    cache.put(a.key(), {"x": 2})
    assert cache.get(a.key()) == {"x": 2}
    assert common.CellCache(tmp_path / "a", redo=True).get(a.key()) is None


def test_seed_means_groups_and_spreads():
    rows = [dict(model="a", makeup="x", seed=0, t=1.0, o=[1.0, 2.0]),
            dict(model="b", makeup="x", seed=0, t=5.0, o=[0.0, 0.0]),
            dict(model="a", makeup="x", seed=1, t=3.0, o=[3.0, 2.0])]
    a, b = common.seed_means(rows, ("model", "makeup"), ("t", "o"))
    assert (a["model"], a["n_seeds"], a["t"], a["o"]) == ("a", 2, 2.0, [2.0, 2.0])
    assert a["t_sd"] == pytest.approx(2**0.5) and a["o_sd"] == pytest.approx([2**0.5, 0.0])
    assert b["n_seeds"] == 1 and np.isnan(b["t_sd"]) and "seed" not in b


def test_spearman_by_hand():
    from experiments.report import spearman

    assert spearman([1, 2, 3], [10, 30, 20]) == pytest.approx(0.5)
    assert spearman([0.1, 0.5, 0.9, 0.7], [5, 1e6, 3, 4]) == pytest.approx(-0.8)  # 1 - 6*18/60


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


@pytest.fixture(scope="module")
def trends(out) -> dict:
    """The quick trends study on one device (run once per module, by whichever test needs it)."""
    from experiments import body_order_trends

    return body_order_trends.main(["--quick", "--out", str(out / "body_order_trends")])


@pytest.mark.experiment
@needs_db
def test_body_order_trends_quick(out, trends):
    from experiments import body_order_trends

    r = trends
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
    # without isolated atoms the composition baseline is the least-squares fit; with them it
    # is the isolated atom's energy (UHF = FCI for H/STO-3G: -0.4665819 Ha), so E^(1) is exact
    full, atoms = (_load(out / "body_order_trends" / "cells" / f"{k}.json") for k in r["cells"])
    assert not full["baseline_from_atoms"] and atoms["baseline_from_atoms"]
    assert atoms["baseline"]["1"] == pytest.approx(-0.4665819 * Hartree, abs=1e-5)
    assert abs(full["baseline"]["1"] - atoms["baseline"]["1"]) > 0.05
    assert r["summary"][1]["order_mae"][0] < 1e-6 < r["summary"][0]["order_mae"][0]
    # resumable: a second run loads every cell from the cache
    again = body_order_trends.main(["--quick", "--out", str(out / "body_order_trends")])
    assert json.dumps(again["summary"]) == json.dumps(r["summary"])


@pytest.mark.experiment
@needs_db
def test_studies_use_every_local_device(out, trends):
    """The quick trends study on 8 (fake CPU) devices: training batches and the test-cluster
    decomposition are sharded, and the numbers equal the one-device run's."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    many = out / "trends_8dev"
    proc = subprocess.run([sys.executable, "-m", "experiments.body_order_trends", "--quick",
                           "--out", str(many)], cwd=common.ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    b = _load(many / "body_order_trends.json")
    for key in trends["cells"]:
        c1 = _load(out / "body_order_trends" / "cells" / f"{key}.json")
        c8 = _load(many / "cells" / f"{key}.json")
        assert (c1["devices"], c8["devices"]) == (1, 8)
        t1, t8 = c1["tests"]["test"], c8["tests"]["test"]
        assert np.allclose(t8["total"], t1["total"], rtol=0, atol=1e-6)
        assert np.allclose(np.concatenate(t8["per_order"]), np.concatenate(t1["per_order"]),
                           rtol=0, atol=1e-6)
    assert [s["total_mae"] for s in b["summary"]] == pytest.approx(
        [s["total_mae"] for s in trends["summary"]], abs=1e-4)


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


@pytest.mark.parametrize("name", ["body_order_trends", "converged", "generalization",
                                  "learning_curves", "reference_mbe", "report"])
def test_a_quick_run_without_out_never_writes_into_results(name, tmp_path, monkeypatch):
    """``--quick`` (the CI size) without ``--out`` writes to ``<tempdir>/jbo_NAME_quick``, for
    every study (it overwrote the committed results/NAME/ of all but the main job)."""
    import importlib
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    args = common.parser(name, "doc").parse_args(["--quick"])
    assert common.out_dir(args, name) == tmp_path / f"jbo_{name}_quick"
    importlib.import_module(f"experiments.{name}")  # each study takes its folder from out_dir
    src = (common.ROOT / "experiments" / f"{name}.py").read_text()
    assert "common.out_dir(args" in src
