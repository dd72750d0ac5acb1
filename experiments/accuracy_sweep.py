"""Why the main job's SOAP-BPNN stops near 60 meV/atom: one training variant per call.

    python -m experiments.accuracy_sweep NAME '{"schedule": "cosine", "epochs": 37}'
    python -m experiments.accuracy_sweep half '{"epochs": 74, "frac": 0.5}'
    python -m experiments.accuracy_sweep high '{"epochs": 74, "regime": "high"}'

Trains ``TrainConfig(**BASE | JSON)`` (the main job's data, makeup ``full``, SOAP-BPNN of the
main job unless ``"model"`` is given; a step budget, not a wall-time one, so that runs on a busy
machine compare) and appends one JSON line to ``results/accuracy_sweep/runs.jsonl``: the
validation curve, the best model's validation MAE per regime and its training MAE on up to 400
H_8 training clusters per regime (meV/atom). Extra keys: ``"frac"`` keeps that fraction of the
parents (a fixed hash of the cluster name), ``"regime"`` one regime only. The committed lines
were run on 2026-11-26, on this 2-core CPU or on a 16-core CPU beside a GPU (``"host"``), one
thread per run; docs/study.md's main-job section quotes them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "accuracy_sweep" / "runs.jsonl"
BASE = dict(db=str(ROOT / "data" / "h_clusters.npz"), model="soap_bpnn",
            hypers={"max_radial": 6, "max_angular": 4, "hidden": [64, 64]},
            makeup="full", epochs=2000, batch_size=16, lr=3e-3, schedule="constant",
            force_weight=1.0, seed=0, eval_every=200, patience=None, plateau_patience=None,
            max_steps=3000, resume=False, progress=False, tensorboard=False)


def run(name: str, over: dict) -> dict:
    import jbo  # noqa: F401  (float64)
    from jbo.data.records import read_records
    from jbo.train import TrainConfig, evaluate, train

    over = dict(over)
    hypers, frac, only = over.pop("hypers", {}), over.pop("frac", 1.0), over.pop("regime", None)
    base_hypers = BASE["hypers"] if over.get("model", "soap_bpnn") == "soap_bpnn" else {}
    cfg = TrainConfig(**{**BASE, **over, "hypers": {**base_hypers, **hypers}})
    recs = [r for r in read_records(cfg.db) if only is None or r.regime == only]
    if frac < 1:
        recs = [r for r in recs if zlib.crc32(r.cluster.encode()) % 1000 < 1000 * frac]
    t0 = time.perf_counter()
    res = train(cfg, records=recs)
    out = {"name": name, "over": json.dumps({**over, "hypers": hypers, "frac": frac,
                                             "regime": only}),
           "host": platform.node(), "seconds": time.perf_counter() - t0,
           "steps": len(res.steps), "curve": [round(h["val_mae"], 1) for h in res.history]}
    for regime in ("low", "high"):
        val = [r for r in res.data.val if r.regime == regime]
        if val:
            train_rows = [r for r in res.data.train if r.regime == regime and r.n_atoms == 8]
            out[regime] = round(evaluate(res.model, val)["mae"], 2)
            out[f"train_{regime}"] = round(
                evaluate(res.model, train_rows[:400])["mae"], 2)
    out["all"] = round(min(out["curve"]), 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.accuracy_sweep",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("name", help="name of the variant (its line in runs.jsonl)")
    p.add_argument("over", nargs="?", default="{}", help="JSON overrides of TrainConfig "
                   "(plus \"frac\" and \"regime\")")
    args = p.parse_args(argv)
    try:
        out = run(args.name, json.loads(args.over))
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("a") as f:
        f.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    from jbo import compilation_cache

    compilation_cache.enable()  # a second run loads its programs from disk
    sys.exit(main())
