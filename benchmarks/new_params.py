"""What a second parameter set of the same architecture costs the engine.

    python -m benchmarks.new_params [--model soap_bpnn] [--n 8] [--out results/benchmarks/new_params.json]

Decomposes one H_n cluster (exhaustive) with parameter set A, then with a fresh parameter set
B of the same zoo model, then with B again; reports each call's wall time and the number of
XLA compilations it triggered (a ``jax.monitoring`` listener), and the ratio of the first-B
call to the repeat-B call (1 when new parameters reuse the compiled program). Runs unchanged
on older jbo versions, so before/after numbers come from the same script.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import jbo  # noqa: F401
from jbo import models
from jbo.decompose import body_orders

from benchmarks.common import write_json

_COMPILES: list[float] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **_kw: _COMPILES.append(secs)
    if event == "/jax/core/compile/backend_compile_duration" else None)


def timed(fn) -> dict:
    """Wall time (s) of ``fn()`` until its result is ready, and the compilations it caused."""
    del _COMPILES[:]
    t0 = time.perf_counter()
    jax.block_until_ready(fn().per_order)
    return {"seconds": time.perf_counter() - t0, "compilations": len(_COMPILES),
            "compile_seconds": float(sum(_COMPILES))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="soap_bpnn")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--out", default="results/benchmarks/new_params.json")
    args = ap.parse_args(argv)
    module = models.create(args.model)
    fa, fb = (models.energy_fn(module, models.init(module, seed)) for seed in (0, 1))
    rng = np.random.default_rng(0)
    pos = np.cumsum(rng.normal(0, 0.5, (args.n, 3)) + [0.8, 0, 0], axis=0)
    out = {"model": args.model, "n_atoms": args.n, "jbo": jbo.__version__,
           "params_a": timed(lambda: body_orders(fa, pos)),
           "params_b": timed(lambda: body_orders(fb, pos)),
           "params_b_again": timed(lambda: body_orders(fb, pos))}
    out["ratio_new_params_to_repeat"] = out["params_b"]["seconds"] / out["params_b_again"][
        "seconds"]
    for key in ("params_a", "params_b", "params_b_again"):
        r = out[key]
        print(f"{key:15s} {r['seconds']:8.3f} s  {r['compilations']:3d} compilations "
              f"({r['compile_seconds']:.2f} s compiling)")
    print(f"second parameter set / repeat: {out['ratio_new_params_to_repeat']:.1f}x")
    write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
