"""The study layer (jbo.study): one cell type, grids, the cache's keys, typed results.

The committed cells under ``results/*/cells/`` are the references: every one must load into a
typed result, keep its key, and be found by the grid of the command that made it (else a
regeneration would train instead of reading it back).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from jbo.study import Cell, CellCache, CellResult, Grid, StopReason, axis, fingerprint
from jbo.study.fixed import cached

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
CELLS = sorted(RESULTS.glob("*/cells/*.json"))
FIXED_STUDIES = ("body_order_trends", "body_order_trends_bias", "learning_curves",
                 "generalization")


def _stored(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_committed_cell_loads_into_a_typed_result():
    """Old JSONs (both frameworks, cells stored before ``ema_decay`` existed) read back: their
    Cell writes the stored fields again, converged ones have a parsed stop reason."""
    assert len(CELLS) >= 200
    kinds = set()
    # the stop kind the study reports (some cells store a stale "stop_kind" that an older
    # reading of the text gave; converged.json's rows read the text, as StopReason does)
    reported = {r["key"]: r["stop_kind"]
                for r in _stored(RESULTS / "converged" / "converged.json")["rows"]}
    for p in CELLS:
        d = _stored(p)
        r = CellResult.from_json(d)
        want = {k: v for k, v in d["cell"].items()}
        got = json.loads(json.dumps(r.cell.to_json()))
        if "ema_decay" in got and "ema_decay" not in want:  # stored before it existed
            assert got.pop("ema_decay") == 0.0
        assert got == want and list(got) == list(want), p.name
        assert r.key == d["key"] == p.stem and r.steps == d["steps"]
        assert set(r.tests) == set(d["tests"])
        t = r.tests["test"]
        assert t.model.clusters == tuple(d["tests"]["test"]["cluster"]) and len(t.ref) == len(t.model)
        if r.cell.protocol == "converged":
            assert r.stop is not None and r.stop.kind == reported.get(r.key, r.stop.kind)
            kinds.add(r.stop.kind)
        else:
            assert r.stop is None and "stop_reason" not in d
    assert kinds == {"converged", "schedule", "budget"}


# the texts jbo.train writes (tests/test_train*.py pin them), one per limit
TEXTS = {
    "patience": "converged: validation MAE did not improve by more than 0.5% in 10 evaluations "
                "(best 10.92 meV/atom)",
    "resumed": "converged before the resumed step",
    "max_steps": "budget: max_steps=24 reached",
    "epochs": "budget: 12 epochs done",
    "schedule_no_val": "schedule finished (cosine over 3 epochs); no validation data "
                       "(val_fraction=0 or one training parent): the final parameters are kept",
    "schedule": "schedule finished (cosine over 69 epochs): best validation MAE 7.6 meV/atom, "
                "3 of 40 evaluations since one improved it by more than 0.5%",
    "max_seconds": "budget: max_seconds=240 reached at step 900",
}


@pytest.mark.parametrize("limit", sorted(TEXTS))
def test_stop_reason_round_trips(limit):
    s = StopReason.parse(TEXTS[limit])
    assert s.limit == limit and s.text() == TEXTS[limit]
    assert StopReason.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_a_stored_structured_stop_reads_back():
    """Cells written now store ``stop`` (kind, limit, numbers) beside the text; old ones only
    the text: both read to the same StopReason."""
    d = _stored(next((RESULTS / "converged" / "cells").glob("*.json")))
    old = CellResult.from_json(d).stop
    new = CellResult.from_json({**d, "stop": json.loads(json.dumps(old.to_json()))}).stop
    assert new == old and new.text() == d["stop_reason"]


def test_stop_reason_numbers_and_kinds():
    """The numbers are the text's; the kinds are the converged study's stop kinds (a constant
    schedule's epochs count as 'schedule', as they always did)."""
    s = StopReason.parse(TEXTS["patience"])
    assert (s.kind, s.best, s.patience, s.min_improvement_pct) == ("converged", 10.92, 10, 0.5)
    s = StopReason.parse(TEXTS["max_seconds"])
    assert (s.kind, s.max_seconds, s.step) == ("budget", 240.0, 900)
    s = StopReason.parse(TEXTS["schedule"])
    assert (s.kind, s.schedule, s.epochs, s.bad_evals, s.evals) == ("schedule", "cosine", 69,
                                                                    3, 40)
    assert StopReason.parse(TEXTS["epochs"]).kind == "schedule"
    assert StopReason.parse(TEXTS["max_steps"]).kind == "budget"


def test_every_committed_stop_reason_round_trips():
    texts = {_stored(p).get("stop_reason") for p in CELLS} - {None}
    assert len(texts) > 40
    for t in texts:
        assert StopReason.parse(t).text() == t


def test_an_unknown_stop_reason_is_refused():
    with pytest.raises(ValueError, match="unknown stop reason.*_FORMS"):
        StopReason.parse("stopped: the cat sat on the keyboard")


def test_a_cell_refuses_fields_its_protocol_does_not_key():
    """A field outside a protocol's key would silently share a cached result: refused."""
    with pytest.raises(ValueError, match="force_weight=0.1 is not used by the fixed protocol"):
        Cell("pet", force_weight=0.1)
    with pytest.raises(ValueError, match="converged cell trains on one regime"):
        Cell("pet", "converged")
    assert Cell("pet").steps == 2000 and Cell.converged("pet").steps == 8000
    assert Cell.converged("pet", max_seconds=300).max_seconds == 300.0  # one key for 300, 300.0
    assert Cell.converged("pet", max_seconds=300).key() == \
        Cell.converged("pet", max_seconds=300.0).key()


def test_grid_is_the_product_of_its_axes_in_order():
    g = Grid(Cell("pet"), [axis("seed", [0, 1]), axis("model", ["a", "b"]),
                           axis("lam", [0.0, 0.1])], where=lambda c: not c.lam or c.model == "a")
    got = [(c.seed, c.model, c.lam) for c in g]
    assert got == [(0, "a", 0.0), (0, "a", 0.1), (0, "b", 0.0),
                   (1, "a", 0.0), (1, "a", 0.1), (1, "b", 0.0)]
    assert len(Grid(Cell("pet"), [axis("seed", [0, 0])])) == 1  # each cell once


def _legacy_data(study: str):
    return SimpleNamespace(spec=_stored(RESULTS / study / "DATA.json")["legacy_spec"])


def test_the_body_order_grid_finds_every_committed_cell():
    """The grid of ``python -m experiments.body_order_trends`` (5 models x 4 makeups x 3
    seeds) reads all 60 committed cells back, in the order body_order_trends.json lists
    them; against other data it finds none (nothing stale reused)."""
    from experiments import common

    args = SimpleNamespace(models=["soap_bpnn", "linear_ace", "pet", "mace", "nequip"],
                           makeups=["full", "up_to:2", "up_to:4", "up_to:4+atoms"],
                           regimes=None, steps=2000, batch_size=32, lr=3e-3, use_bias=False)
    grid = Grid(common.base_cell(args), [axis("seed", [0, 1, 2]), axis("model", args.models),
                                         axis("makeup", args.makeups)])
    cache = CellCache(RESULTS / "body_order_trends" / "cells")
    found = [cached(c, _legacy_data("body_order_trends"), cache) for c in grid]
    summary = _stored(RESULTS / "body_order_trends" / "body_order_trends.json")
    assert [f["key"] for f in found] == summary["cells"] == [c.name() for c in grid]
    other = SimpleNamespace(spec=fingerprint("other data"))
    assert all(cached(c, other, cache) is None for c in grid)


def test_the_learning_curves_grid_reads_the_body_order_cells_too():
    from experiments import common

    args = SimpleNamespace(models=["soap_bpnn", "linear_ace", "pet"],
                           makeups=["full", "up_to:4+atoms"], regimes=None, steps=2000,
                           batch_size=32, lr=3e-3, use_bias=False)
    grid = Grid(common.base_cell(args), [axis("seed", [0, 1]), axis("model", args.models),
                                         axis("makeup", args.makeups),
                                         axis("n_train", [8, 24, None])])
    cache = CellCache(RESULTS / "learning_curves" / "cells",
                      fallbacks=[RESULTS / "body_order_trends" / "cells"])
    found = [cached(c, _legacy_data("learning_curves"), cache) for c in grid]
    assert [f["key"] for f in found] == \
        _stored(RESULTS / "learning_curves" / "learning_curves.json")["cells"]


def test_the_converged_grid_gives_the_committed_keys():
    """``python -m experiments.converged --heavy-steps 8000 --max-seconds 1200`` (the
    committed run, docs/study.md) on the data of results/converged/DATA.json: its keys are
    those of the committed cells (56 of its 68), the cells' own fields give the same keys."""
    from experiments import converged

    spec = fingerprint(_stored(RESULTS / "converged" / "DATA.json")["sha256"], 0.25, 0)
    stored = set(CellCache(RESULTS / "converged" / "cells").keys())
    keys = [c.key(spec) for c in converged.grid(converged.parse(
        ["--heavy-steps", "8000", "--max-seconds", "1200"]))]
    assert len(keys) == 68 and sum(k in stored for k in keys) == 56
    assert "soap_bpnn_low_full_nall_s0_" in " ".join(k for k in keys if k in stored)
    for p in (RESULTS / "converged" / "cells").glob("*.json"):
        assert Cell.from_json(_stored(p)["cell"]).key(spec) == p.stem
    c = Cell.from_json(_stored(next((RESULTS / "converged" / "cells").glob("*.json")))["cell"])
    assert dataclasses.replace(c, split_seed=c.split_seed + 1).key(spec) not in stored


def test_a_regeneration_that_changes_nothing_rewrites_nothing(tmp_path):
    """finish() keeps a study's JSON when only its provenance (wall time, dataset path) or the
    last bits of its floats differ; a changed number is written."""
    import time

    from experiments import common

    out = tmp_path
    first = dict(db="/a/data/h.npz", config=dict(db="/a/data/h.npz"), x=[1.0, float("nan")])
    common.finish("s", first, out, time.perf_counter(), [])
    before = (out / "s.json").read_bytes()
    again = dict(db="/tmp/h.npz", config=dict(db="/tmp/h.npz"), x=[1.0 + 1e-15, float("nan")])
    common.finish("s", again, out, time.perf_counter() - 5, [])
    assert (out / "s.json").read_bytes() == before
    common.finish("s", dict(again, x=[1.001, float("nan")]), out, time.perf_counter(), [])
    assert json.loads((out / "s.json").read_text())["x"][0] == 1.001


def test_generalization_names_the_main_job_summary_instead_of_copying_it():
    """A copy of results/train_body_order_reg/summary.json went stale when the main job was
    rerun, so regenerating generalization rewrote 2400 lines it does not own."""
    from experiments.generalization import training_summary

    committed = _stored(RESULTS / "generalization" / "generalization.json")
    assert training_summary() == committed["train_body_order_reg"] == \
        "results/train_body_order_reg/summary.json"
    assert (ROOT / committed["train_body_order_reg"]).exists()
