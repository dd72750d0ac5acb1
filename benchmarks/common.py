"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np


def write_json(path: str, out: dict, indent: int = 1) -> None:
    """Write a benchmark's results to ``path`` (folders created) and say so."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(out, fh, indent=indent)
    print(f"wrote {path}")


def best_time(fn, repeat: int = 3) -> float:
    """Best wall time (s) of ``fn()`` over ``repeat`` runs, after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best
