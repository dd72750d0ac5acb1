"""Generalization: train on H_4..H_8 of one density regime, test on larger clusters and on the
other regime, and relate the error to the model's own high-order weight.

Each model is trained (dataset makeup: the first of ``--makeups``) on the training parents of
each of ``--train-regimes`` (one regime per cell) with and without the body-order regularizer of
:mod:`jbo.train.regularizers` (penalizing interaction terms above order K). Every cell is
evaluated on the held-out H_4..H_8 parents of its regime (``test``), the H_4..H_8 parents of the
other regime (``other_regime``) and the H_9..H_12 clusters (``heldout``, both regimes). The
high-order weight of a model is w_>K = Σ_{k>K} |E^(k)| / Σ_{k≥2} |E^(k)| of its exhaustive
decomposition on the test clusters.
If ``results/train_body_order_reg/`` holds a summary, the JSON names it (``train_body_order_reg``).

``python -m experiments.generalization [--quick]`` writes ``results/generalization/``.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from experiments import common
from jbo import analysis, plots
from jbo.study import CellResult, Grid, axis
from jbo.study import fixed as study

NAME = "generalization"


def summarize(cell: dict, order: int) -> dict:
    r = CellResult.from_json(cell)
    c, t = r.cell, r.tests
    reg = c.regimes[0] if c.regimes else ""
    none = analysis.Spectra.concat([])
    model, ref = (t["heldout"].model, t["heldout"].ref) if "heldout" in t else (none, none)
    same = np.array([g == reg for g in model.regimes], bool)

    def mae(keep) -> float:
        return analysis.total_mae(model.rows(keep), ref.rows(keep))

    sizes = sorted(set(model.n[same].tolist()))
    test = t["test"]
    return dict(model=c.model, lam=c.lam, reg_order=c.reg_order, train_regime=reg,
                makeup=c.makeup, seed=c.seed, train_mae=cell["train_mae"],
                test_mae=analysis.total_mae(test.model, test.ref),
                other_regime_mae=analysis.total_mae(t["other_regime"].model,
                                                    t["other_regime"].ref)
                if "other_regime" in t else float("nan"),
                heldout_mae=mae(same), heldout_other_mae=mae(~same), heldout_n=sizes,
                heldout_mae_per_n=[mae(same & (model.n == n)) for n in sizes],
                high_order_weight=analysis.high_order_weight(test.model, order),
                ref_high_order_weight=analysis.high_order_weight(test.ref, order),
                test_order_mae=analysis.order_mae(test.model, test.ref, 4))


GROUP = ("model", "lam", "train_regime")  # one model, seeds pooled
FIELDS = ("test_mae", "heldout_mae", "other_regime_mae", "heldout_other_mae",
          "high_order_weight", "heldout_mae_per_n", "train_mae")


def seed_means(rows: list[dict]) -> list[dict]:
    """:func:`summarize` rows averaged over seeds (``FIELD_sd``: spread; ``n_seeds``)."""
    return common.seed_means(rows, GROUP, FIELDS)


def figures(rows: list[dict], out) -> list[str]:
    files = []
    rows = seed_means(rows)
    label = lambda r: (r["model"] + (" (reg.)" if r["lam"] else "")  # noqa: E731
                       + f" ← {r['train_regime']}")
    pts = {"unregularized": [], "regularized": []}
    for r in rows:
        if np.isfinite(r["heldout_mae"]):
            pts["regularized" if r["lam"] else "unregularized"].append(
                (r["high_order_weight"], r["heldout_mae"], label(r)))
    files.append(plots.scatter_labelled(
        pts, out / "error_vs_high_order_weight.png",
        "model high-order weight w_>2 on test clusters", "MAE on H_9..H_12 (meV/atom)",
        "Extrapolation error vs the model's own high-order weight", logy=True).name)
    groups = {}
    for r in rows:
        groups[label(r)] = {"test H4-H8": r["test_mae"], "H9-H12": r["heldout_mae"],
                            "other regime H4-H8": r["other_regime_mae"],
                            "other regime H9-H12": r["heldout_other_mae"]}
    files.append(plots.bars(groups, out / "generalization_errors.png",
                            "MAE (meV/atom)", f"Makeup {rows[0]['makeup']}; model ← training "
                            "regime", logy=True).name)
    size = {label(r): (r["heldout_n"], r["heldout_mae_per_n"]) for r in rows}
    if any(v[0] for v in size.values()):
        files.append(plots.curves(size, out / "error_vs_size.png", "cluster size n",
                                  "MAE (meV/atom)", "Error vs cluster size (same regime)",
                                  logy=True).name)
    return files


def training_summary() -> str | None:
    """Where the regularized runs of ``experiments/train_body_order_reg`` are, if written (a
    path, not a copy: this study's JSON must not change when the main job is rerun)."""
    path = common.ROOT / "results" / "train_body_order_reg" / "summary.json"
    return str(path.relative_to(common.ROOT)) if path.exists() else None


def main(argv: Sequence[str] | None = None) -> dict:
    p = common.parser(NAME, __doc__)
    common.add_training_args(p, models="soap_bpnn,linear_ace,pet,mace,nequip",
                             makeups="up_to:4+atoms", seeds="0,1")
    p.add_argument("--train-regimes", type=common._csv, default=common._csv("low,high"),
                   help="one set of cells per training regime")
    p.add_argument("--lam", type=float, default=0.1, help="regularizer strength λ")
    p.add_argument("--reg-order", type=int, default=2, help="penalize orders above K")
    p.add_argument("--reg-models", type=common._csv,
                   default=common._csv("soap_bpnn,linear_ace,pet"),
                   help="models also trained with the regularizer")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.reg_models, args.train_regimes = ["linear_ace"], [], ["low"]
        args.seeds = [0]
        args.steps, args.max_test, args.max_train_atoms = 40, 4, 6
    out = common.out_dir(args, NAME)
    t0 = time.perf_counter()
    data = study.load_data(args.db, args.test_fraction, 0, args.max_train_atoms,
                            (4, 5) if args.quick else None)
    cache = common.CellCache(out / "cells", args.redo)
    grid = Grid(common.base_cell(args, reg_order=args.reg_order),
                [axis("seed", args.seeds), axis("regimes", [(g,) for g in args.train_regimes]),
                 axis("model", args.models), axis("lam", (0.0, args.lam))],
                where=lambda c: not c.lam or c.model in args.reg_models)
    cells = [study.run_cell(cell, data, cache, args.max_test, ("test", "other_regime", "heldout"))
             for cell in grid]
    rows = [summarize(c, args.reg_order) for c in cells]
    result = dict(db=args.db, quick=args.quick, config=vars(args), rows=rows,
                  cells=[c["key"] for c in cells], train_body_order_reg=training_summary())
    result["figures"] = figures(rows, out) if rows else []
    return common.finish(NAME, result, out, t0, cells)


if __name__ == "__main__":
    from jbo import compilation_cache

    compilation_cache.enable()  # a second run loads its programs from disk
    main()
