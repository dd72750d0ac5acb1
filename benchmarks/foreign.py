"""Overhead of decomposing a foreign model over the model's own cost, measured in one run.

    python -m benchmarks.foreign [--quick] [--out results/benchmarks/foreign.json]

* EMT (ASE) on Cu_10, all 1023 subclusters: wall time of ``body_orders(from_ase(EMT()), atoms)``
  (fresh cache, one worker) vs a bare Python loop of ``get_potential_energy()`` on every
  subcluster (no Möbius at all), best of 3 each, interleaved. "cold" adds the one-time
  compilation of the assembly program for this N (first call in a process).
* workers: EMT itself (~1 ms/call) and EMT with an added 10 ms wait per call (stands in for a
  slow calculator such as DFT; the wait uses no CPU, so this measures the pool's scheduling
  overhead, not CPU scaling, on a 2-core shared machine), with 1, 2 and 4 worker processes
  (pool started before timing).
* torch (when installed): a pair + three-body torch model on Cu_10, ``from_torch`` (one batch
  per subcluster size) vs a loop of one model call per subcluster.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

from ase.calculators.emt import EMT
from ase.cluster import Icosahedron

import jbo  # noqa: F401
from jbo.adapters import from_ase
from jbo.decompose import body_orders

from benchmarks.common import write_json


class SlowEMT(EMT):
    """EMT plus a fixed wait per call: a stand-in for an expensive calculator."""

    def __init__(self, wait: float = 0.01, **kw):
        super().__init__(**kw)
        self.wait = wait

    def calculate(self, *args, **kw):
        time.sleep(self.wait)
        super().calculate(*args, **kw)


def cluster(n: int, seed: int):
    atoms = Icosahedron("Cu", 2)[:n]
    atoms.rattle(0.05, seed=seed)
    return atoms


def subsets(n: int):
    return [list(s) for k in range(1, n + 1) for s in itertools.combinations(range(n), k)]


def bare_loop(atoms, calc) -> float:
    t = time.perf_counter()
    for s in subsets(len(atoms)):
        sub = atoms[s]
        sub.calc = calc
        sub.get_potential_energy()
    return time.perf_counter() - t


def decomposition(atoms, pot) -> float:
    pot.clear_cache()
    t = time.perf_counter()
    body_orders(pot, atoms).per_order.block_until_ready()
    return time.perf_counter() - t


def bench_emt(n: int, repeat: int) -> dict:
    atoms = cluster(n, 0)
    pot = from_ase(EMT(), progress=False)
    cold = decomposition(atoms, pot)
    loops, decs = [], []
    for _ in range(repeat):
        loops.append(bare_loop(atoms, EMT()))
        decs.append(decomposition(atoms, pot))
    row = {"n_atoms": n, "subclusters": 2**n - 1, "loop_s": min(loops),
           "decompose_s": min(decs), "decompose_cold_s": cold,
           "ratio": min(decs) / min(loops), "ratio_cold": cold / min(loops)}
    print(f"EMT Cu_{n}: loop {row['loop_s']:.3f} s, decomposition {row['decompose_s']:.3f} s "
          f"(ratio {row['ratio']:.2f}x; first call with compilation {cold:.2f} s, "
          f"{row['ratio_cold']:.2f}x)")
    return row


def bench_workers(n: int, calc_factory, label: str, counts) -> dict:
    atoms = cluster(n, 1)
    times = {}
    for w in counts:
        pot = from_ase(calc_factory(), workers=w, batch=8, progress=False)
        pot.start_workers()  # process start-up (spawn + imports) outside the timing
        times[w] = decomposition(atoms, pot)
        pot.close()
    speedup = {w: times[counts[0]] / t for w, t in times.items()}
    print(f"{label} Cu_{n}: " + ", ".join(f"{w} worker(s) {t:.2f} s ({speedup[w]:.2f}x)"
                                          for w, t in times.items()))
    return {"calculator": label, "n_atoms": n, "seconds": times, "speedup": speedup}


def bench_torch(n: int) -> dict | None:
    try:
        import torch
    except ImportError:
        print("torch not installed: torch benchmark skipped (pip install 'jbo[torch]')")
        return None
    from jbo.adapters import from_torch

    def model(pos, numbers, mask):
        nn = pos.shape[1]
        pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(nn, dtype=torch.bool)
        d2 = ((pos[:, :, None] - pos[:, None]) ** 2).sum(-1)
        w = torch.where(pair, torch.exp(-torch.where(pair, d2, 1.0).sqrt()), 0.0)
        return 2.0 * w.sum((1, 2)) + torch.einsum("bij,bjk,bki->b", w, w, w)

    atoms = cluster(n, 2)
    pos, num = atoms.positions, atoms.numbers
    t = time.perf_counter()
    with torch.no_grad():
        for s in subsets(n):
            model(torch.tensor(pos[s][None]), torch.tensor(num[s][None]),
                  torch.ones(1, len(s), dtype=torch.bool))
    loop = time.perf_counter() - t
    pot = from_torch(model, progress=False)
    body_orders(pot, pos, num)  # warm-up: compiles the assembly for this N
    pot.clear_cache()
    t = time.perf_counter()
    body_orders(pot, pos, num).per_order.block_until_ready()
    dec = time.perf_counter() - t
    print(f"torch Cu_{n}: loop of one call per subcluster {loop:.3f} s, from_torch "
          f"decomposition {dec:.3f} s ({loop / dec:.1f}x faster)")
    return {"n_atoms": n, "loop_s": loop, "decompose_s": dec, "speedup": loop / dec}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small clusters, one repeat")
    p.add_argument("--out", default="results/benchmarks/foreign.json")
    args = p.parse_args(argv)
    n = 6 if args.quick else 10
    out = {"cpu_cores": os.cpu_count(), "note": "shared 2-core CPU; best of 3 unless --quick",
           "emt": bench_emt(n, 1 if args.quick else 3)}
    counts = [1, 2] if args.quick else [1, 2, 4]
    out["workers"] = [bench_workers(n, EMT, "EMT", counts),
                      bench_workers(6 if args.quick else 8, SlowEMT, "EMT+10ms", counts)]
    out["torch"] = bench_torch(n)
    write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
