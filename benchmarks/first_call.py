"""Time to a first decomposition: fresh processes, compilation included.

    python -m benchmarks.first_call [--quick] [--models soap_bpnn pet] [--sizes 8 10 12 14]
                                    [--repeat 3] [--out results/benchmarks/first_call.json]

Per zoo model (default hyperparameters, fresh initialisation) and cluster size N (random H
cluster), each in its own fresh Python process:

* ``jbo_first``: the first ``body_orders`` call with an empty persistent compilation cache
  (``JBO_CACHE_DIR`` a new directory), compile and checks included; then ``jbo_warm`` (best of
  3 later calls, the layout ``auto`` picks) and ``compact_warm`` (the bucketed layout that long
  runs move to, best of 3 after its own compile);
* ``cached_first``: the first call of a second process on that cache;
* ``competent_first`` / ``competent_warm``: the 20-line JAX way, ``jit(vmap(model over all
  2^N - 1 masks))`` and a jitted fast Möbius transform (:func:`competent`), no cache;
* ``cli``: ``jbo decompose MODEL.jbo --structures one_H8.extxyz --json out.json`` end to end
  (process start included), empty cache and cached (:func:`cli_end_to_end`).

The three kinds of process are interleaved, ``--repeat`` times; medians are reported with the
ratios of the same run. Timings are wall seconds on whatever CPU runs it (see ``machine``),
with the process CPU seconds of the first calls (``*_cpu_s``: less sensitive to a loaded
machine; JAX's compiler and runtime threads included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup(model: str, n: int):
    import jax
    import jax.numpy as jnp

    import jbo  # noqa: F401  (float64)
    from benchmarks.decompose import h_system
    from jbo import models

    module = models.create(model)
    pos = h_system(n, 0.09, n)
    params = module.init(jax.random.PRNGKey(0), jnp.asarray(pos[:4]), jnp.ones(4, jnp.int32),
                         jnp.ones(4, bool))
    return models.energy_fn(module, params), pos


def competent(pot, pos):
    """The naive vectorised way: every subset mask in one vmapped jitted call, then Möbius.
    Returns a function of no arguments (its programs compile on the first call)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jbo import lattice

    n = len(pos)
    masks = ((np.arange(1, 2**n)[:, None] >> np.arange(n)) & 1).astype(bool)  # [2^N-1, N]
    species = np.ones(n, np.int32)
    energies = jax.jit(jax.vmap(lambda m: pot.energy(pos, species, m)))

    @jax.jit
    def orders(e):
        lat = jnp.concatenate([jnp.zeros(1), e.astype(jnp.float64)])
        return lattice.order_sums(lattice.mobius(lat), n)

    return lambda: orders(energies(masks))


def _best(fn, repeat: int = 3) -> float:
    import jax

    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def worker(kind: str, model: str, n: int) -> dict:
    """One fresh process's measurements (printed as a JSON line)."""
    t0 = time.perf_counter()
    if kind != "competent":
        from jbo import compilation_cache

        compilation_cache.enable()  # as the CLI, the experiments and the calculator do
    import jax
    import numpy as np

    pot, pos = _setup(model, n)
    out = {"setup_s": time.perf_counter() - t0}
    if kind == "competent":
        t, c = time.perf_counter(), time.process_time()
        run = competent(pot, pos)
        res = np.asarray(run())
        out["first_s"], out["first_cpu_s"] = time.perf_counter() - t, time.process_time() - c
        out["warm_s"] = _best(run)
    else:
        from jbo import compilation_cache
        from jbo.decompose import body_orders

        t, c = time.perf_counter(), time.process_time()
        res = np.asarray(body_orders(pot, pos).per_order)
        out["first_s"], out["first_cpu_s"] = time.perf_counter() - t, time.process_time() - c
        out["cache"] = compilation_cache.counts()
        if kind == "fresh":
            out["warm_s"] = _best(lambda: body_orders(pot, pos).per_order)
            t = time.perf_counter()
            jax.block_until_ready(body_orders(pot, pos, layout="compact").per_order)
            out["compact_first_s"] = time.perf_counter() - t
            out["compact_warm_s"] = _best(
                lambda: body_orders(pot, pos, layout="compact").per_order)
    out["per_order"] = res.tolist()
    return out


def _spawn(kind: str, model: str, n: int, cache: str) -> dict:
    env = {**os.environ, "JBO_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.first_call", "--worker", kind,
                           model, str(n)], env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{kind} {model} N={n} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t
    return out


def measure(model: str, n: int, repeat: int) -> dict:
    runs: dict[str, list[dict]] = {"fresh": [], "cached": [], "competent": []}
    failed = None  # why the competent way gave no answer, if it did not
    for _ in range(repeat):  # interleaved: the machine's load hits all three alike
        with tempfile.TemporaryDirectory() as cache:
            runs["fresh"].append(_spawn("fresh", model, n, cache))
            runs["cached"].append(_spawn("cached", model, n, cache))
            size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
        try:
            runs["competent"].append(_spawn("competent", model, n, "off"))
        except RuntimeError as err:  # all 2^N masks in one vmap can exceed the memory
            if "Out of memory" not in str(err) and "RESOURCE_EXHAUSTED" not in str(err):
                raise
            failed = "out of memory (all 2^N - 1 masks in one vmap)"

    def med(kind: str, key: str) -> float | None:
        return statistics.median(r[key] for r in runs[kind]) if runs[kind] else None

    row = {
        "model": model, "n_atoms": n, "repeat": repeat,
        "jbo_first_s": med("fresh", "first_s"), "cached_first_s": med("cached", "first_s"),
        "competent_first_s": med("competent", "first_s"),
        "jbo_first_cpu_s": med("fresh", "first_cpu_s"),
        "cached_first_cpu_s": med("cached", "first_cpu_s"),
        "competent_first_cpu_s": med("competent", "first_cpu_s"),
        "jbo_warm_s": med("fresh", "warm_s"), "compact_first_s": med("fresh", "compact_first_s"),
        "compact_warm_s": med("fresh", "compact_warm_s"),
        "competent_warm_s": med("competent", "warm_s"),
        "cached_process_s": med("cached", "process_s"), "cache_bytes": size,
        "cache_hits_second_process": runs["cached"][-1]["cache"]["hits"],
    }
    if failed:
        row["competent_failed"] = failed
        return row
    row["max_abs_diff_vs_competent_eV"] = max(
        abs(a - b) for a, b in zip(runs["fresh"][-1]["per_order"],
                                   runs["competent"][-1]["per_order"]))
    row["first_ratio"] = row["jbo_first_s"] / row["competent_first_s"]
    row["warm_speedup"] = row["competent_warm_s"] / row["jbo_warm_s"]
    row["compact_warm_speedup"] = row["competent_warm_s"] / row["compact_warm_s"]
    return row


def cli_end_to_end(repeat: int, model: str = "results/train_body_order_reg/plain.jbo") -> dict:
    """``jbo decompose MODEL --structures one_H8.extxyz --json out.json`` as a user runs it: wall
    seconds of the whole process (interpreter start, imports, model load, compile), with an
    empty persistent cache and then on that cache. The H_8 is the first 8-atom cluster of the
    shipped data."""
    import ase
    import ase.io

    from jbo.data.records import read_records

    rec = next(r for r in read_records(str(ROOT / "data/h_clusters.npz"))
               if r.n_atoms == 8 and r.is_full)
    fresh, cached = [], []
    with tempfile.TemporaryDirectory() as tmp:
        xyz = Path(tmp, "one_H8.extxyz")
        ase.io.write(xyz, ase.Atoms(numbers=rec.species, positions=rec.positions))
        for i in range(repeat):
            cache = Path(tmp, f"cache{i}")
            for into in (fresh, cached):
                env = {**os.environ, "JBO_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "jbo.cli", "decompose", str(ROOT / model),
                                "--structures", str(xyz), "--json", str(Path(tmp, "out.json"))],
                               env=env, cwd=tmp, check=True, capture_output=True)
                into.append(time.perf_counter() - t)
    return {"command": f"jbo decompose {model} --structures one_H8.extxyz --json out.json",
            "cluster": rec.cluster, "first_process_s": statistics.median(fresh),
            "cached_process_s": statistics.median(cached), "repeat": repeat}


def table(result: dict) -> str:
    """The markdown table of a written result (docs/benchmarks.md quotes it)."""
    head = ("| model | N | jbo first call (s) | competent first call (s) | ratio (wall / CPU) "
            "| second process, cached (s) | warm auto / compact (s) | competent warm (s) |\n"
            "|---|---|---|---|---|---|---|---|")
    rows = [f"| {r['model']} | {r['n_atoms']} | {r['jbo_first_s']:.2f} | "
            + (f"{r['competent_first_s']:.2f} | {r['first_ratio']:.2f} / "
               f"{r['jbo_first_cpu_s'] / r['competent_first_cpu_s']:.2f} | "
               if "competent_failed" not in r else f"{r['competent_failed']} | - | ")
            + f"{r['cached_first_s']:.2f} | {r['jbo_warm_s']:.3f} / {r['compact_warm_s']:.3f} | "
            + (f"{r['competent_warm_s']:.3f} |" if "competent_failed" not in r else "- |")
            for r in result["rows"]]
    return "\n".join([head, *rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=3, metavar=("KIND", "MODEL", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="soap_bpnn at N = 8, once (seconds)")
    ap.add_argument("--models", nargs="+", default=["soap_bpnn", "pet", "mace"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[8, 10, 12, 14])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "results/benchmarks/first_call.json"))
    ap.add_argument("--table", metavar="JSON", help="print the markdown table of a result")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if args.worker:
        kind, model, n = args.worker
        print(json.dumps(worker(kind, model, int(n))))
        return 0
    if args.quick:
        args.models, args.sizes, args.repeat = ["soap_bpnn"], [8], 1
    rows = []
    for model in args.models:
        for n in args.sizes:
            rows.append(measure(model, n, args.repeat))
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                              for k, v in rows[-1].items()}), flush=True)
    cli = cli_end_to_end(args.repeat)
    print(json.dumps(cli), flush=True)
    out = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                       "load_avg_1min_at_end": os.getloadavg()[0]},
           "rows": rows, "cli": cli}
    if not args.quick:
        from benchmarks.common import write_json

        write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
