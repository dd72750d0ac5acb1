"""The converged study (issue 15): body-order trends of models trained to convergence, per
density regime, on energies + forces, with every cell's model shipped.

``python -m experiments.converged [--quick] [--regimes low,high] [--models ...]
[--makeups ...] [--seeds ...] [--sizes ...]`` writes ``results/converged/``: ``cells/KEY.json``
(one per cell; a rerun loads them and trains only what is missing), ``models/KEY.jbo`` (the
best-validation model of each cell, ``jbo decompose results/converged/models/KEY.jbo``),
``converged.json`` and the figures. Data and test sets: :mod:`jbo.study.regimes`; one
cell: :mod:`jbo.study.converged`; numbers and figures:
:mod:`experiments.converged_summary`.

The grid (defaults), per regime and seed:

* **main**: every model × every makeup (``full``, ``up_to:2``, ``up_to:4``, ``up_to:4+atoms``,
  ``all``), trained on all the makeup's rows: makeups compare at *matched compute* (one
  convergence rule and wall-time budget), not at matched numbers of structures;
* **learning curves** (d): ``--lc-models`` on ``--lc-makeups`` at ``--sizes`` training
  structures (``Cell.n_train``, a seeded uniform draw of the makeup's rows: matched
  numbers of structures), the main cells giving the largest size;
* **regularizer** (e): ``--reg-models`` on ``full`` with λ((E − E_MBE(K))/(n s))², K = 2.

PET trains with rotational augmentation (``rotate``) where ``TrainConfig`` has it.

Compute plan, measured here (2-core CPU shared with other jobs, niced; energies + forces,
batch 16, the study hypers, validation of ~208 clusters every 40 steps included, so upper
bounds): ms per training step soap_bpnn 9, linear_ace 12, nequip 60, pet 80, mace 86,
plus ~15-45 s of compilation per cell and ~20 s per architecture and cluster size (8, 9, 10) for the exhaustive
decompositions (once per process). The 8000-step cosine (``--steps``) takes soap_bpnn and
linear_ace ~70-100 s; pet, mace and nequip (``HEAVY``) run a 2500-step cosine
(``--heavy-steps``; 150-215 s here, 8000 on a GPU) so that it anneals inside the default
``--max-seconds 300`` (``stop_kind`` says which cells still stopped on the budget; their
curves are in the cells). Default grid (one seed): 5 models × 5 makeups × 2 regimes = 50 main cells
(20 cheap × ~130 s, 30 heavy × ~270 s), 16 learning-curve cells (soap_bpnn, linear_ace × 2
makeups × 2 sizes × 2 regimes, ~100 s) and 2 regularized soap_bpnn cells (~270 s): ≈ 3.7 h
of wall time, ≈ 7.5 CPU-core-hours. Heavy cells (GPU candidates): pet, mace and nequip
(7-10x soap_bpnn's step; on a GPU give them ``--heavy-steps 8000``) and the regularized cells
(~2.5x a plain step). Shipped models (float64 msgpack): soap_bpnn 164 kB,
pet 176 kB, nequip 101 kB, mace 91 kB, linear_ace 16 kB; the default grid ships ~7 MB
(two seeds ~15 MB, within issue 15's 20 MB).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from experiments import common
from jbo.configargs import add_config_args
from jbo.train.config import RegularizerConfig, TrainConfig
from experiments.converged_summary import (THRESHOLD, accuracy_table, bytes_per_model, figures,
                                           one_per_setting, seed_means, settings_compared,
                                           summarize)
from jbo.study import Cell, Grid, axis, chain
from jbo.study.converged import run_converged
from jbo.study.regimes import describe, load_regimes

NAME = "converged"
MODELS = "soap_bpnn,linear_ace,pet,mace,nequip"
MAKEUPS = "full,up_to:2,up_to:4,up_to:4+atoms,all"
HEAVY = ("pet", "mace", "nequip")  # 7-10x soap_bpnn's CPU step: a shorter cosine on CPUs


def _sizes(text: str) -> list[int]:
    return [int(t) for t in common._csv(text)]


def grid(args) -> list[Cell]:
    """The cells of the study (main, learning curves, regularized), in run order: per seed and
    regime, every model x makeup, then the learning curves, then the regularized cells."""
    base = Cell.converged(args.models[0] if args.models else "soap_bpnn",
                          eval_every=args.eval_every, patience=args.patience,
                          max_seconds=args.max_seconds, batch_size=args.batch_size, lr=args.lr,
                          force_weight=args.force_weight, val_fraction=args.val_fraction,
                          max_steps=args.max_steps, ema_decay=args.ema,
                          extra_hypers=tuple(sorted(args.hypers.items())))

    def models(names):  # a model fixes its schedule length and rotation
        return [dict(model=m, steps=args.heavy_steps if m in HEAVY else args.steps,
                     rotate=m == "pet") for m in names]

    cells = []
    for seed in args.seeds:
        for regime in args.regimes:
            at = dataclasses.replace(base, seed=seed, regimes=(regime,))
            cells += chain(
                Grid(at, [models(args.models), axis("makeup", args.makeups)]),
                Grid(at, [models(args.lc_models), axis("makeup", args.lc_makeups),
                          axis("n_train", args.sizes)]),
                Grid(at, [models(args.reg_models), axis("makeup", args.makeups[:1]),
                          [dict(lam=args.lam, reg_order=args.order)]]))
    cells = chain(cells)
    from jbo import models as zoo
    for model, hypers in {(c.model, tuple(c.hypers().items())) for c in cells}:
        zoo.create(model, **dict(hypers))  # unknown names or values: refused before training
    return cells


def parse(argv: Sequence[str] | None):
    p = common.parser(NAME, __doc__)
    csv = common._csv
    p.add_argument("--regimes", type=csv, default=csv("low,high"), help="one study per regime")
    p.add_argument("--models", type=csv, default=csv(MODELS), help="zoo models")
    p.add_argument("--makeups", type=csv, default=csv(MAKEUPS), help="dataset makeups")
    p.add_argument("--seeds", type=common._ints, default=[0], help="training seeds")
    p.add_argument("--steps", type=int, default=8000, help="cosine schedule length (steps)")
    p.add_argument("--heavy-steps", type=int, default=2500,
                   help=f"cosine schedule length of {', '.join(HEAVY)}")
    # training options generated from TrainConfig / RegularizerConfig (one source of truth)
    add_config_args(p, TrainConfig, include=("hypers", "eval_every", "patience", "max_seconds",
                                             "batch_size", "lr", "force_weight",
                                             "val_fraction", "ema_decay"),
                    defaults={"eval_every": 200, "patience": 10, "max_seconds": 300.0,
                              "batch_size": 16, "lr": 3e-3, "force_weight": 1.0,
                              "val_fraction": 0.1, "ema_decay": 0.0})  # --ema
    p.add_argument("--sizes", type=_sizes, default=_sizes("200,800"),
                   help="learning curves: training structures per cell")
    p.add_argument("--lc-models", type=csv, default=csv("soap_bpnn,linear_ace"))
    p.add_argument("--lc-makeups", type=csv, default=csv("full,up_to:4+atoms"))
    p.add_argument("--reg-models", type=csv, default=csv("soap_bpnn"),
                   help="also trained with the body-order regularizer")
    add_config_args(p, RegularizerConfig, include=("lam", "order"),
                    defaults={"lam": 1.0, "order": 2})
    p.add_argument("--max-test", type=int, default=None,
                   help="at most this many parents per test set (default all)")
    p.add_argument("--max-heldout", type=int, default=None,
                   help="at most this many H_9/H_10 parents (default all)")
    p.add_argument("--train-only", action="store_true",
                   help="train and ship the missing cells' models, evaluate nothing (e.g. on a "
                   "GPU machine; a later run without it evaluates the shipped files)")
    p.add_argument("--cached-only", action="store_true",
                   help="summarise the grid's cells that have been run; train nothing")
    args = p.parse_args(argv)
    if args.quick:  # one cheap cell: seconds of training, one compiled decomposition per size
        args.regimes, args.models, args.makeups, args.seeds = ["low"], ["linear_ace"], \
            ["full"], [0]
        args.lc_models, args.reg_models = [], []
        args.steps, args.eval_every, args.patience, args.max_seconds = 24, 8, 2, 60.0
        args.heavy_steps = 24
        args.max_test, args.max_heldout, args.max_steps = 3, 1, 24
    else:
        args.max_steps = None
    return args


def cached_cells(cache: common.CellCache, spec: str) -> list[Cell]:
    """The cells with a stored result for the data ``spec`` (a stored cell whose key its
    fields no longer give, i.e. run by other code or on other data, is left out)."""
    cells = [Cell.from_json(cache.get(key)["cell"]) for key in cache.keys()]
    return [c for c, key in zip(cells, cache.keys()) if c.key(spec) == key]


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse(argv)
    out = common.out_dir(args, NAME)
    t0 = time.perf_counter()
    data = load_regimes(args.db)
    unknown = set(args.regimes) - set(data.regimes)
    if unknown:
        raise SystemExit(f"unknown regimes {sorted(unknown)}; the dataset has {data.regimes}")
    cache = common.CellCache(out / "cells", args.redo)
    cells = grid(args)
    if args.cached_only:  # summarise every cell run for this data (any grid); train nothing
        missing = sum(cache.get(c.key(data.spec)) is None for c in cells)
        cells = cached_cells(cache, data.spec)
        print(f"--cached-only: {len(cells)} cells cached; {missing} of this grid not run")
    if args.train_only:
        for c in cells:
            run_converged(c, data, cache, out / "models", train_only=True)
        return dict(trained=[c.key(data.spec) for c in cells])
    done = [run_converged(c, data, cache, out / "models", args.max_test, args.max_heldout)
            for c in cells]
    every = [summarize(c) for c in done]
    rows, superseded = one_per_setting(every)
    result = dict(db=args.db, quick=args.quick, config=vars(args),
                  data=describe(data, args.regimes), threshold_mev_per_atom=THRESHOLD,
                  accuracy=accuracy_table(rows),
                  bytes_per_model=bytes_per_model(rows), rows=rows, means=seed_means(rows),
                  cells=[r["key"] for r in rows], superseded=superseded,
                  settings_compared=settings_compared(every),
                  trained=sum(not c["cached"] for c in done),
                  devices=sorted({r["device"] for r in rows}),
                  atomic_limit="results/reference_mbe (python -m experiments.reference_mbe): "
                  "the atomic-limit analysis of the reference (spin choices), unchanged")
    result["figures"] = figures(rows, out)
    return common.finish(NAME, result, out, t0, done)


if __name__ == "__main__":
    from jbo import compilation_cache

    compilation_cache.enable()  # a second run loads its programs from disk
    main()
