"""Body-order trends the models deduce for themselves, per model and dataset makeup.

For each model of the zoo and each dataset makeup (``full``: full clusters only; ``up_to:2``:
+ dimers; ``up_to:4``: + all subclusters up to 4 atoms; ``up_to:4+atoms``: + isolated atoms),
train on the training parents, decompose the held-out test clusters exhaustively
(:func:`jbo.analysis.decompose_records`) and compare E^(k) with the reference MBE order by order:
parity plots per order, the spectrum of mean |E^(k)| per atom, and the MAE of E^(k) per atom.

``python -m experiments.body_order_trends [--quick]`` writes ``results/body_order_trends/``.
"""

from __future__ import annotations

import time
from typing import Sequence

from experiments import common
from jbo import analysis, plots
from jbo.study import CellResult, Grid, axis
from jbo.study import fixed as study

NAME = "body_order_trends"
K_SHOW = 6  # orders shown in the figures


def summarize(cell: dict, k_max: int = K_SHOW) -> dict:
    """The numbers of one cell: total / per-order MAE and spectra (meV/atom)."""
    r = CellResult.from_json(cell)
    t = r.tests["test"]
    return dict(model=r.cell.model, makeup=r.cell.makeup, seed=r.cell.seed, n_test=len(t.model),
                n_train_rows=r.n_train_rows, train_seconds=r.train_seconds,
                total_mae=t.total_mae(), order_mae=analysis.order_mae(t.model, t.ref, k_max),
                spectrum=analysis.spectrum(t.model, k_max)["mean_abs_mev_per_atom"],
                ref_spectrum=analysis.spectrum(t.ref, k_max)["mean_abs_mev_per_atom"],
                high_order_weight=analysis.high_order_weight(t.model),
                ref_high_order_weight=analysis.high_order_weight(t.ref))


def figures(cells: list[dict], out, k_max: int = K_SHOW) -> list[str]:
    files = []
    models = list(dict.fromkeys(c["cell"]["model"] for c in cells))
    seed0 = [c for c in cells if c["cell"]["seed"] == min(x["cell"]["seed"] for x in cells)]
    for m in models:
        panels: dict = {}
        for c in seed0:
            if c["cell"]["model"] != m:
                continue
            t = c["tests"]["test"]
            for k in range(1, k_max + 1):
                pts = [(1e3 * r[k - 1] / n, 1e3 * p[k - 1] / n) for p, r, n in
                       zip(t["per_order"], t["ref_per_order"], t["n"]) if n >= k]
                if pts:
                    x, y = zip(*pts)
                    panels.setdefault(f"{m}: E^({k})", {})[c["cell"]["makeup"]] = (x, y)
        if panels:
            files.append(plots.parity_grid(
                panels, out / f"parity_{m}.png", "reference E^(k)/n (meV/atom)",
                "model E^(k)/n (meV/atom)", f"{m}: body orders on test clusters",
                ncols=3).name)
    summ = [summarize(c, k_max) for c in seed0]
    ks = list(range(1, k_max + 1))
    spec, err = {}, {}
    for m in models:
        rows = [s for s in summ if s["model"] == m]
        if not rows:
            continue
        spec[m] = {"reference": (ks, rows[0]["ref_spectrum"]),
                   **{s["makeup"]: (ks, s["spectrum"]) for s in rows}}
        err[m] = {s["makeup"]: (ks, s["order_mae"]) for s in rows}
    styles = {"reference": dict(color="k", lw=2.5, marker="s")}
    if spec:
        files.append(plots.curve_grid(spec, out / "spectrum.png", "body order k",
                                      "mean |E^(k)| / n  (meV/atom)",
                                      "Body-order spectra: models vs reference (test clusters)",
                                      ncols=min(3, len(spec)), logy=True, styles=styles,
                                      sharey=True).name)
        files.append(plots.curve_grid(err, out / "order_error.png", "body order k",
                                      "MAE of E^(k) / n  (meV/atom)",
                                      "Per-order error vs reference (test clusters)",
                                      ncols=min(3, len(err)), logy=True, sharey=True).name)
    return files


def main(argv: Sequence[str] | None = None) -> dict:
    p = common.parser(NAME, __doc__)
    common.add_training_args(p, models="soap_bpnn,linear_ace,pet,mace,nequip",
                             makeups="full,up_to:2,up_to:4,up_to:4+atoms", seeds="0,1,2")
    p.add_argument("--n-train", type=int, default=None, help="training parents (default all)")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.makeups, args.seeds = ["linear_ace"], ["full", "up_to:4+atoms"], [0]
        args.steps, args.max_test, args.n_train, args.max_train_atoms = 60, 6, 6, 6
    out = common.out_dir(args, NAME)
    t0 = time.perf_counter()
    data = study.load_data(args.db, args.test_fraction, 0, args.max_train_atoms,
                            (4, 5) if args.quick else None)
    cache = common.CellCache(out / "cells", args.redo)
    grid = Grid(common.base_cell(args, args.n_train),
                [axis("seed", args.seeds), axis("model", args.models),
                 axis("makeup", args.makeups)])
    cells = [study.run_cell(cell, data, cache, args.max_test, ("test",)) for cell in grid]
    result = dict(db=args.db, quick=args.quick, config=vars(args),
                  n_train_parents=cells[0]["n_train_parents"] if cells else 0,
                  test_clusters=cells[0]["tests"]["test"]["cluster"] if cells else [],
                  summary=[summarize(c) for c in cells], cells=[c["key"] for c in cells])
    result["figures"] = figures(cells, out)
    return common.finish(NAME, result, out, t0, cells)


if __name__ == "__main__":
    from jbo import compilation_cache

    compilation_cache.enable()  # a second run loads its programs from disk
    main()
