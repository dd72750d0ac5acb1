"""Cost of the training loop and of the body-order regularizer, against the bare step.

    python -m benchmarks.train [--only loop] [--model soap_bpnn] [--out ...]

``loop``: marginal wall time per step of the real loop (``jbo.train.train`` with validation,
logging, TensorBoard and checkpoints; compilation excluded: the difference of two runs of
``--loop-steps`` and 3x as many steps, after a warm-up run) vs the bare jitted step (median of
``train_step`` calls), for soap_bpnn and pet on ``--loop-makeup`` (goal: loop/step <= 1.5).

Writes ``results/benchmarks/train.json``: compile time and median wall time per step of both
steps (same model, parameters, batch), their ratio (goal: <= 3), and the setup. Uses the
training rows of ``data/h_clusters.npz`` (full clusters H_4..H_8); without that file, random
H_8 clusters with dummy labels (timing does not depend on the labels).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jbo  # noqa: E402,F401
from jbo.data.batch import pad_records  # noqa: E402
from jbo.data.records import Record, read_records  # noqa: E402
from jbo.models import Model  # noqa: E402
from jbo.train import RegularizerConfig, TrainConfig  # noqa: E402
from jbo.train import dataset as ds  # noqa: E402
from jbo.train.step import OptSpec, StepSpec, init_opt as _init_opt, train_step  # noqa: E402
from jbo.train.model import create_module, init_params  # noqa: E402

DEFAULT_HYPERS = {"max_radial": 6, "max_angular": 4, "hidden": [64, 64]}  # the experiment's


def _synthetic(n: int = 8, count: int = 32) -> list[Record]:
    from jbo.data.clusters import random_cluster
    return [Record(np.asarray(random_cluster(n, "high", s).positions), np.ones(n, np.int32),
                   -13.6 * n, None, f"bench-{s}", (1 << n) - 1, n, "train")
            for s in range(count)]


def _records(db: str, makeup: str) -> tuple[list[Record], list[Record], str]:
    """(training rows, H_8 clusters for the regularizer, where they came from)."""
    if Path(db).exists():
        rows = [r for r in read_records(db) if r.split == "train"]
        h8 = [r for r in rows if r.is_full and r.n_atoms == 8]
        if rows and h8:
            return ds.select_makeup(rows, makeup), h8, db
    rec = _synthetic()
    return rec, rec, "synthetic random H_8 clusters"


def _time(fn, repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return compile_s, float(np.median(times))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=str(ROOT / "data" / "h_clusters.npz"))
    p.add_argument("--model", default="soap_bpnn")
    p.add_argument("--hypers", default=json.dumps(DEFAULT_HYPERS))
    p.add_argument("--makeup", default="full")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--reg-batch-size", type=int, default=4)
    p.add_argument("--order", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--force-weight", type=float, default=0.0)
    p.add_argument("--only", default="", help="comma-separated variants (default: all; "
                   "'loop' alone updates only the loop entry of --out)")
    p.add_argument("--loop-models", default="soap_bpnn,pet")
    p.add_argument("--loop-makeup", default="up_to:4+atoms")
    p.add_argument("--loop-steps", type=int, default=256)
    p.add_argument("--loop-repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "train.json"))
    args = p.parse_args(argv)

    if args.only == "loop":
        out = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
        out["loop"] = loop_benchmark(args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(json.dumps(out["loop"], indent=1))
        return out
    train_rows, reg_rows, source = _records(args.db, args.makeup)
    hypers = json.loads(args.hypers)
    module = create_module(args.model, hypers, "float64")
    n_max = max(r.n_atoms for r in train_rows)
    batch = pad_records(train_rows[:args.batch_size], n_max, args.batch_size)
    reg_batch = pad_records(reg_rows[:args.reg_batch_size], size=args.reg_batch_size)
    base, scale = ds.normalization(TrainConfig(), train_rows)
    params = init_params(module, batch, 0, jnp.float64)
    model = Model.of(module, None, base, scale, jnp.float64)  # the step's static part
    opt = OptSpec.of(TrainConfig(), 1000)
    opt_state = _init_opt(opt, params)
    key = jax.random.PRNGKey(0)
    out = {"data": source, "model": args.model, "hypers": hypers, "batch_size": args.batch_size,
           "reg_batch_size": args.reg_batch_size, "reg_cluster_atoms": int(reg_batch.mask
                                                                          .sum(1).max()),
           "order_K": args.order, "train_batch_max_atoms": n_max,
           "device": str(jax.devices()[0]), "jax": jax.__version__,
           "machine": platform.processor() or platform.machine()}
    variants = [("plain", None, None), ("terms_engine", "terms", "engine"),
                ("terms_masks", "terms", "masks"), ("truncation", "truncation", "engine")]
    for name, mode, backend in variants:
        if args.only and name not in args.only.split(",") + ["plain"]:
            continue
        reg = RegularizerConfig(lam=0.0 if mode is None else 1.0, order=args.order,
                                mode=mode or "terms", backend=backend or "engine",
                                batch_size=args.reg_batch_size)
        spec = StepSpec(model, opt, reg, 1.0, args.force_weight)
        c, t = _time(lambda spec=spec: train_step(spec, params, opt_state, batch, reg_batch,
                                                  key), args.repeats)
        out[name] = {"compile_s": c, "step_ms": 1e3 * t}
        if mode is not None:
            ratio = t / (1e-3 * out["plain"]["step_ms"])
            out[name]["cost_ratio"] = ratio
            # evaluated every n-th step only (RegularizerConfig.every): amortized ratio
            out[name]["every_for_3x"] = max(1, int(np.ceil((ratio - 1) / 2)))
        print(name, out[name], flush=True)
    if not args.only or "loop" in args.only.split(","):
        out["loop"] = loop_benchmark(args)
    out["goal_ratio"] = 3.0
    out["note"] = ("cost_ratio = regularized / plain step wall time (median), same batch and "
                   "parameters; with RegularizerConfig.every=n the amortized ratio is "
                   "1 + (cost_ratio - 1) / n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return out


def loop_benchmark(args) -> dict:
    """Marginal wall time per step of ``train()`` vs the bare jitted step, per model.

    The machine may be shared: each repeat times the bare step right before its two loop runs,
    and the repeat with the median ratio is reported (all repeats are kept)."""
    import tempfile
    from jbo.train import train
    from jbo.train.loop import setup
    records = read_records(args.db)
    res = {"makeup": args.loop_makeup, "batch_size": args.batch_size, "device":
           str(jax.devices()[0]), "goal_ratio": 1.5}
    for name in args.loop_models.split(","):
        hypers = json.loads(args.hypers) if name == args.model else {}
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(db=args.db, model=name, hypers=hypers, makeup=args.loop_makeup,
                              batch_size=args.batch_size, progress=False, resume=False,
                              epochs=1000)
            run = setup(cfg, records=records)
            st = run.state
            batch = pad_records(run.data.train[:args.batch_size],
                                max(r.n_atoms for r in run.data.train), args.batch_size)
            def bare(calls: int) -> float:
                times = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    jax.block_until_ready(train_step(run.spec, st.params, st.opt_state, batch,
                                                     {}, st.key, 0))
                    times.append(time.perf_counter() - t0)
                return min(times)
            step0 = bare(3)  # compiles, then a first estimate for the window length
            # the window: at least --loop-steps, and about 3 s of steps, so noise stays small
            n1 = max(args.loop_steps, int(3.0 / step0) // 64 * 64)
            n2 = 3 * n1
            # the first run (past one validation and a checkpoint) compiles everything
            train(cfg.replace(max_steps=run.n_batches + 1, out_dir=f"{tmp}/w"), records=records)
            rows = []
            for i in range(args.loop_repeats):  # interleaved: each ratio sees one machine load
                step_s = bare(2 * args.repeats)
                wall = {}
                for n in (n1, n2):
                    t0 = time.perf_counter()
                    r = train(cfg.replace(max_steps=n, out_dir=f"{tmp}/{i}-{n}"),
                              records=records)
                    wall[n] = time.perf_counter() - t0
                loop_s = (wall[n2] - wall[n1]) / (n2 - n1)
                rows.append({"step_ms": 1e3 * step_s, "loop_ms_per_step": 1e3 * loop_s,
                             "loop_over_step": loop_s / step_s, "wall_n_s": wall[n1],
                             "wall_3n_s": wall[n2]})
            med = sorted(rows, key=lambda x: x["loop_over_step"])[len(rows) // 2]
            res[name] = {"hypers": hypers, "train_rows": len(run.data.train),
                         "steps_per_epoch": run.n_batches, "n": n1, "evaluations_in_window":
                         (n2 // run.n_batches) - (n1 // run.n_batches),
                         **med, "steps_per_s": 1e3 / med["loop_ms_per_step"],
                         "repeats": rows, "stop_reason": r.stop_reason}
        print(name, res[name], flush=True)
    res["note"] = ("loop_ms_per_step = (wall(3n steps) - wall(n steps)) / 2n of jbo.train.train "
                   "with out_dir (CSV, TensorBoard, checkpoints) and validation every epoch, "
                   "after a warm-up run that compiles; step_ms = fastest bare train_step call "
                   "(blocking) just before; the repeat with the median loop/step is reported")
    return res


if __name__ == "__main__":
    main()
