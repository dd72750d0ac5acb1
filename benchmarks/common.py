"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time

import jax
import numpy as np


def best_time(fn, repeat: int = 3) -> float:
    """Best wall time (s) of ``fn()`` over ``repeat`` runs, after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best
