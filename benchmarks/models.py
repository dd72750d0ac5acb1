"""Cost of the zoo models with their default hyperparameters, on one 8-atom H cluster.

    python -m benchmarks.models [--quick] [--models soap_bpnn mace ...] [--out results/benchmarks/models.json]

For each model: parameter count, compile time, time of one jitted energy evaluation of the
8-atom cluster, of energy + forces, and of the engine's access pattern (all 255 non-empty
subset masks of the cluster in one vmapped call, reported per subset). Timings are the best
of several repeats after a warm-up (compilation excluded), on whatever backend JAX uses (the
docs/models.md's zoo table is CPU). Also reports PET's rotational error at initialisation (it is not
rotationally constrained): max |E(Rx) - E(x)| over random rotations.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

import jbo  # noqa: F401  (float64)
from jbo import models

from benchmarks.common import best_time, write_json

N_ATOMS = 8


def h_cluster(n: int = N_ATOMS, seed: int = 0, box: float = 3.0, dmin: float = 0.7) -> np.ndarray:
    """Random H positions (Å) in a cube, pairwise at least ``dmin`` apart."""
    rng = np.random.default_rng(seed)
    pts: list[np.ndarray] = []
    while len(pts) < n:
        p = rng.uniform(0.0, box, 3)
        if all(np.linalg.norm(p - q) >= dmin for q in pts):
            pts.append(p)
    return np.array(pts)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def bench_model(name: str, repeat: int) -> dict:
    module = models.create(name)
    params = models.init(module, 0)
    pos = h_cluster()
    z = np.ones(N_ATOMS, np.int32)
    mask = np.ones(N_ATOMS, bool)
    masks = ((np.arange(1, 1 << N_ATOMS)[:, None] >> np.arange(N_ATOMS)) & 1).astype(bool)

    energy = jax.jit(lambda x, m: module.apply(params, x, z, m))
    forces = jax.jit(jax.value_and_grad(lambda x, m: module.apply(params, x, z, m)))
    subsets = jax.jit(jax.vmap(lambda m: module.apply(params, pos, z, m)))

    t = time.perf_counter()
    energy.lower(pos, mask).compile()
    compile_s = time.perf_counter() - t
    row = {
        "model": name,
        "parameters": models.num_parameters(params),
        "cutoff": module.cutoff,
        "receptive_field": module.receptive_field,
        "compile_s": compile_s,
        "energy_ms": 1e3 * best_time(lambda: energy(pos, mask), repeat),
        "energy_forces_ms": 1e3 * best_time(lambda: forces(pos, mask), repeat),
        "subset_us": 1e6 * best_time(lambda: subsets(masks), max(1, repeat // 5)) / len(masks),
        "energy": float(energy(pos, mask)),
        "hypers": {k: (list(v) if isinstance(v, tuple) else v) for k, v in models.default_hypers(name).items()},
    }
    if not module.is_local or name == "pet":
        rng = np.random.default_rng(1)
        e0 = row["energy"]
        errs = [abs(float(energy(pos @ random_rotation(rng).T, mask)) - e0) for _ in range(20)]
        row["rotation_error_max_eV"] = max(errs)
        row["rotation_error_mean_eV"] = float(np.mean(errs))
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | parameters | eval / 8-atom cluster (ms) | energy + forces (ms) | per subset, vmapped (µs) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['model']}` | {r['parameters']:,} | {r['energy_ms']:.2f} | "
            f"{r['energy_forces_ms']:.2f} | {r['subset_us']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--models", nargs="*", default=models.installed())
    ap.add_argument("--out", default="results/benchmarks/models.json")
    args = ap.parse_args(argv)
    repeat = 5 if args.quick else 50
    rows = []
    for name in args.models:
        row = bench_model(name, repeat)
        print(
            f"{name:11s} params {row['parameters']:>7,d}  compile {row['compile_s']:5.1f}s  "
            f"E {row['energy_ms']:7.3f} ms  E+F {row['energy_forces_ms']:7.3f} ms  "
            f"subset {row['subset_us']:7.1f} us",
            flush=True,
        )
        rows.append(row)
    out = {
        "n_atoms": N_ATOMS,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "dtype": "float64",
        "repeat": repeat,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "models": rows,
    }
    print()
    print(markdown(rows))
    for r in rows:
        if "rotation_error_max_eV" in r:
            print(f"\n{r['model']} rotational error at init: max {r['rotation_error_max_eV']:.3e} eV, "
                  f"mean {r['rotation_error_mean_eV']:.3e} eV over 20 rotations (|E| = {abs(r['energy']):.3f} eV)")
    write_json(args.out, out, indent=2)
    return out


if __name__ == "__main__":
    main()
