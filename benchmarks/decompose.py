"""Throughput of the body-order engine, with the naive way measured in the same run.

    python -m benchmarks.decompose [--quick] [--model NAME] [--out results/benchmarks/decompose.json]

* exhaustive N = 6..14: subclusters evaluated per second by ``body_orders`` (one vmapped,
  jitted evaluation + fast Möbius) vs a Python loop of one jitted call per subset (the naive
  way, each subcluster extracted and evaluated alone), and their ratio;
* truncated K = 3, 4 and connected K = 4 on H systems of 50–500 atoms (what fits in memory).

Energies come from an analytic local many-body potential (Morse + EAM-like embedding, 2.5 Å
cutoff; O(N^2) like a neural potential, every order non-zero) or, with
``--model``, from a freshly initialised zoo model. Timings exclude compilation (one warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jbo  # noqa: F401
from jbo import lattice, potentials
from jbo.decompose import body_orders, connected_plan

from benchmarks.common import best_time, write_json

CUTOFF = 2.5


def h_system(n: int, density: float, seed: int, min_dist: float = 0.8) -> np.ndarray:
    """Random H positions (Å) at a number density (Å^-3) with a minimum distance."""
    rng = np.random.default_rng(seed)
    box = (n / density) ** (1 / 3)
    pts = np.empty((0, 3))
    while len(pts) < n:
        p = rng.uniform(0, box, 3)
        if len(pts) == 0 or np.linalg.norm(pts - p, axis=1).min() > min_dist:
            pts = np.vstack([pts, p])
    return pts


def energy_function(model: str | None):
    if model is None:
        return potentials.combine(
            potentials.morse(cutoff=CUTOFF), potentials.embedded_atom(1.0, cutoff=CUTOFF)
        ), "morse+embedded_atom"
    from jbo import models

    module = models.create(model)
    pos = jnp.asarray(h_system(4, 0.05, 0))
    params = module.init(jax.random.PRNGKey(0), pos, jnp.ones(4, jnp.int32), jnp.ones(4, bool))
    return models.energy_fn(module, params), model


def naive(single, pos: np.ndarray) -> np.ndarray:
    """One jitted call per subset on the extracted subcluster, then Möbius: the naive way."""
    n = len(pos)
    energies = np.zeros(1 << n)
    for s in range(1, 1 << n):
        members = [i for i in range(n) if s >> i & 1]
        k = len(members)
        energies[s] = single(pos[members], np.ones(k, np.int32), np.ones(k, bool))
    return np.asarray(lattice.order_sums(lattice.mobius(jnp.asarray(energies)), n))


def bench_exhaustive(fn, sizes, naive_max: int) -> list[dict]:
    rows = []
    for n in sizes:
        pos = h_system(n, 0.09, n)
        engine = jax.jit(lambda p: body_orders(fn, p).per_order)
        t_engine = best_time(lambda: engine(pos))
        row = {"n_atoms": n, "subsets": 2**n - 1, "engine_s": t_engine,
               "engine_subsets_per_s": (2**n - 1) / t_engine}
        if n <= naive_max:
            single = jax.jit(fn)
            for k in range(1, n + 1):  # compile every subcluster size once, outside the timing
                single(pos[:k], np.ones(k, np.int32), np.ones(k, bool))
            lattice.order_sums(lattice.mobius(jnp.zeros(1 << n)), n)  # and the eager Möbius ops
            t0 = time.perf_counter()
            ref = naive(single, pos)
            t_naive = time.perf_counter() - t0
            np.testing.assert_allclose(ref, engine(pos), atol=1e-8)
            row.update(naive_s=t_naive, naive_subsets_per_s=(2**n - 1) / t_naive,
                       speedup=t_naive / t_engine)
        rows.append(row)
        print(json.dumps(row))
    return rows


def bench_large(fn, sizes, orders) -> list[dict]:
    rows = []
    for n in sizes:
        pos = h_system(n, 0.09, 1000 + n)
        degree = float((jnp.asarray(
            np.linalg.norm(pos[:, None] - pos[None], axis=-1) < CUTOFF).sum(1) - 1).mean())
        for mode, k in orders:
            row = {"mode": mode, "n_atoms": n, "max_order": k, "mean_degree": degree}
            try:
                t0 = time.perf_counter()
                if mode == "connected":
                    plan = connected_plan(pos, CUTOFF, k, memory_bytes=jbo.decompose.memory_limit())
                    row["plan_s"] = time.perf_counter() - t0
                    row["subsets"] = plan.n_subsets
                    run = lambda: body_orders(fn, pos, max_order=k, cutoff=CUTOFF, plan=plan)  # noqa: E731
                else:
                    row["subsets"] = lattice.n_subsets_up_to(n, k)
                    run = lambda: body_orders(fn, pos, max_order=k)  # noqa: E731
                t1 = time.perf_counter()
                result = jax.block_until_ready(run())
                row["first_call_s"] = time.perf_counter() - t1
                t1 = time.perf_counter()
                result = jax.block_until_ready(run())
                row["engine_s"] = time.perf_counter() - t1
                row["total_s"] = row["engine_s"] + row.get("plan_s", 0.0)
                row["subsets_per_s"] = row["subsets"] / row["engine_s"]
                row["per_order"] = np.asarray(result.per_order).tolist()
            except MemoryError as err:
                row["skipped"] = str(err)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "per_order"}))
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--model", default=None, help="zoo model name instead of the analytic potential")
    ap.add_argument("--out", default="results/benchmarks/decompose.json")
    args = ap.parse_args(argv)
    fn, name = energy_function(args.model)
    if args.quick:
        ex = bench_exhaustive(fn, [6, 8], naive_max=8)
        large = bench_large(fn, [50], [("truncated", 3), ("connected", 4)])
    else:
        ex = bench_exhaustive(fn, list(range(6, 15)), naive_max=14)
        large = bench_large(
            fn, [50, 100, 200, 500], [("truncated", 3), ("truncated", 4), ("connected", 4)]
        )
    out = {
        "energy_fn": name,
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "exhaustive": ex,
        "large": large,
    }
    write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
