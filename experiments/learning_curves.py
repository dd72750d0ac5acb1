"""Learning curves: test error versus training-set size, per model and dataset makeup.

Each (model, makeup, number of training parents, seed) cell trains on the first n parents of a
seeded order (nested subsets), decomposes the held-out test clusters and records the MAE of the
total energy and of each E^(k) per atom against the reference MBE. Cells of the largest size
are shared with ``body_order_trends`` (same cache key) when its cache exists.

``python -m experiments.learning_curves [--quick]`` writes ``results/learning_curves/``.
"""

from __future__ import annotations

import time
from typing import Sequence

from experiments import common
from jbo import analysis, plots
from jbo.study import CellResult, Grid, axis
from jbo.study import fixed as study

NAME = "learning_curves"
K_ERR = 4  # per-order errors reported for k = 1..K_ERR


def _sizes(text: str) -> list[int | None]:
    return [None if t == "all" else int(t) for t in common._csv(text)]


def summarize(cell: dict) -> dict:
    r = CellResult.from_json(cell)
    t = r.tests["test"]
    return dict(model=r.cell.model, makeup=r.cell.makeup, seed=r.cell.seed,
                n_train_parents=cell["n_train_parents"], n_train_rows=r.n_train_rows,
                total_mae=t.total_mae(), order_mae=analysis.order_mae(t.model, t.ref, K_ERR))


def seed_means(rows: list[dict]) -> list[dict]:
    """:func:`summarize` rows averaged over seeds, one per (model, makeup, training size)."""
    return common.seed_means(rows, ("model", "makeup", "n_train_parents"),
                             ("n_train_rows", "total_mae", "order_mae"))


def _curve(pts: list[dict], model: str, makeup: str, value) -> tuple:
    """``(training structures, value)`` of one model and makeup, ordered by size."""
    return tuple(zip(*sorted((p["n_train_rows"], value(p)) for p in pts
                             if (p["model"], p["makeup"]) == (model, makeup))))


def figures(rows: list[dict], out) -> list[str]:
    files = []
    models = list(dict.fromkeys(r["model"] for r in rows))
    makeups = list(dict.fromkeys(r["makeup"] for r in rows))
    pts = seed_means(rows)
    total = lambda p: p["total_mae"]  # noqa: E731
    panels = {f"makeup {mk}": {m: _curve(pts, m, mk, total) for m in models} for mk in makeups}
    files.append(plots.curve_grid(panels, out / "learning_curves.png",
                                  "training structures", "test MAE of E (meV/atom)",
                                  "Learning curves (total energy, held-out test clusters)",
                                  ncols=min(4, len(panels)), logx=True, logy=True,
                                  sharey=True).name)
    panels = {}
    for m in models:
        for mk in makeups:
            series = {"total E": _curve(pts, m, mk, total)}
            for k in range(K_ERR):
                series[f"E^({k + 1})"] = _curve(pts, m, mk, lambda p, k=k: p["order_mae"][k])
            panels[f"{m}, {mk}"] = series
    files.append(plots.curve_grid(panels, out / "learning_curves_orders.png",
                                  "training structures", "test MAE (meV/atom)",
                                  "Learning curves per body order", ncols=len(makeups),
                                  logx=True, logy=True, sharey=True).name)
    return files


def main(argv: Sequence[str] | None = None) -> dict:
    p = common.parser(NAME, __doc__)
    common.add_training_args(p, models="soap_bpnn,linear_ace,pet",
                             makeups="full,up_to:4+atoms", seeds="0,1")
    p.add_argument("--sizes", type=_sizes, default=_sizes("8,24,all"),
                   help="training parents per cell ('all' = every training parent)")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.makeups, args.sizes, args.seeds = ["linear_ace"], ["full"], [2, 6], [0]
        args.steps, args.max_test, args.max_train_atoms = 60, 6, 6
    out = common.out_dir(args, NAME)
    t0 = time.perf_counter()
    data = study.load_data(args.db, args.test_fraction, 0, args.max_train_atoms,
                            (4, 5) if args.quick else None)
    trends = common.ROOT / "results" / "body_order_trends" / "cells"
    cache = common.CellCache(out / "cells", args.redo, fallbacks=[] if args.quick else [trends])
    grid = Grid(common.base_cell(args), [axis("seed", args.seeds), axis("model", args.models),
                                         axis("makeup", args.makeups), axis("n_train", args.sizes)])
    cells = [study.run_cell(cell, data, cache, args.max_test, ("test",)) for cell in grid]
    rows = [summarize(c) for c in cells]
    result = dict(db=args.db, quick=args.quick, config=vars(args), rows=rows,
                  n_test=len(cells[0]["tests"]["test"]["n"]) if cells else 0,
                  cells=[c["key"] for c in cells])
    result["figures"] = figures(rows, out)
    return common.finish(NAME, result, out, t0, cells)


if __name__ == "__main__":
    from jbo import compilation_cache

    compilation_cache.enable()  # a second run loads its programs from disk
    main()
