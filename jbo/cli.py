"""The ``jbo`` command: train models, decompose them into body orders, label reference data.

    jbo train --db data/h_clusters.db --model soap_bpnn --lam 1 --order 2 --out runs/reg
    jbo decompose runs/reg --db data/h_clusters.db --split heldout
    jbo label ...            (the reference-data tool: same as `python -m jbo.data ...`)

Run ``jbo <command> --help`` for the options of each command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

_EPILOG = """examples:
  jbo train --model soap_bpnn --makeup up_to:3 --epochs 50 --out runs/plain
  jbo train --model soap_bpnn --lam 1.0 --order 2 --out runs/reg
  jbo decompose runs/reg --split heldout --json spectra.json
  jbo label --help

Energies are in eV (per atom in meV/atom where stated), lengths in Å. See docs/CONTRACTS.md
for the ase.db schema the dataset follows."""


def add_makeup_and_regularizer_args(p: argparse.ArgumentParser, lam: float) -> None:
    """The dataset-makeup and body-order-regularizer options shared by ``jbo train`` and the
    main job (``experiments.train_body_order_reg``); ``lam`` is the default strength."""
    p.add_argument("--makeup", default="full", help="training rows: full | up_to:M (add "
                   "subclusters of 2..M atoms) | ...+atoms (add isolated atoms) | all")
    p.add_argument("--baseline-from-atoms", action="store_true",
                   help="composition baseline = the isolated-atom energies of the training set "
                   "(needs a makeup with +atoms); default: least-squares fit")
    p.add_argument("--lam", type=float, default=lam, help="body-order regularizer strength λ")
    p.add_argument("--order", type=int, default=2, help="regularizer order K: penalize k > K")
    p.add_argument("--reg-mode", default="truncation", choices=["terms", "truncation"],
                   help="truncation: λ((E − E_MBE(K))/(n s))², from subsets of size <= K "
                   "(~2.5x a plain step); terms: λ Σ_{k>K} Σ_{|S|=k} ε(S)²/(n s²) over all "
                   "2^n subsets (~15x; amortize with RegularizerConfig.every)")
    p.add_argument("--reg-batch", type=int, default=4, help="clusters per penalty evaluation")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jbo", description="Measure and control the body order of ML interatomic "
        "potentials: train a model (optionally with the body-order regularizer), decompose "
        "any trained model into E^(1), E^(2), ... , or label reference clusters.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{train,decompose,label}")

    t = sub.add_parser("train", help="train a model on an ase.db dataset",
                       description="Train a jbo.models model with energy (+force) losses, "
                       "checkpoints (resumable), CSV/TensorBoard metrics and the optional "
                       "body-order regularizer (penalizing interaction orders k > K).")
    t.add_argument("--db", default="data/h_clusters.db", help="ase.db dataset (default: %(default)s)")
    t.add_argument("--model", default="soap_bpnn", help="registered model (jbo.models.available())")
    t.add_argument("--hypers", default="{}", help="model hyperparameters as JSON, e.g. "
                   "'{\"max_radial\": 4}'")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (Adam)")
    t.add_argument("--schedule", default="cosine", choices=["constant", "cosine", "exponential"])
    t.add_argument("--force-weight", type=float, default=0.0,
                   help="weight of the force loss relative to the per-atom energy loss")
    add_makeup_and_regularizer_args(t, lam=0.0)
    t.add_argument("--reg-every", type=int, default=1,
                   help="evaluate the penalty every n-th step only, weighted by n")
    t.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    t.add_argument("--val-fraction", type=float, default=0.2)
    t.add_argument("--patience", type=int, default=None, help="early stopping (epochs)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--shard", action="store_true", help="data-parallel over all local devices")
    t.add_argument("--out", required=True, help="run folder: checkpoints/, metrics.csv, "
                   "steps.csv, tensorboard/ (an existing run there is resumed)")
    t.add_argument("--no-resume", action="store_true", help="start over even if --out has "
                   "checkpoints (they are overwritten as training proceeds)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser("decompose", help="body-order spectrum of a trained model",
                       description="Decompose a trained checkpoint's energies of the clusters of "
                       "an ase.db into body orders E^(k) (exhaustive for N <= 16; use "
                       "--max-order for larger clusters).")
    d.add_argument("checkpoint", help="run folder of `jbo train` (or its checkpoints/)")
    d.add_argument("--db", default="data/h_clusters.db", help="clusters to decompose")
    d.add_argument("--split", default="heldout", help="rows with this split (full clusters)")
    d.add_argument("--max-order", type=int, default=None, help="truncate at this order")
    d.add_argument("--which", default="best", choices=["best", "latest"])
    d.add_argument("--json", default=None, help="also write the results to this JSON file")
    sub.add_parser("label", help="label reference clusters (delegates to python -m jbo.data)",
                   add_help=False)
    return p


def _train(args) -> int:
    from jbo.train import RegularizerConfig, TrainConfig, train

    cfg = TrainConfig(
        db=args.db, model=args.model, hypers=json.loads(args.hypers), makeup=args.makeup,
        baseline_from_atoms=args.baseline_from_atoms,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
        force_weight=args.force_weight, dtype=args.dtype, val_fraction=args.val_fraction,
        patience=args.patience, seed=args.seed, shard=args.shard, out_dir=args.out,
        resume=not args.no_resume, progress=not args.quiet,
        regularizer=RegularizerConfig(lam=args.lam, order=args.order, mode=args.reg_mode,
                                      every=args.reg_every, batch_size=args.reg_batch))
    res = train(cfg)
    last = res.history[-1] if res.history else {}
    print(f"{res.stop_reason}: {len(res.steps)} steps in {res.seconds:.1f} s; "
          f"val MAE {last.get('val_mae', float('nan')):.2f} meV/atom; run in {args.out}")
    return 0


def _decompose(args) -> int:
    import numpy as np

    from jbo.data.batches import read_db
    from jbo.train.analysis import model_per_order
    from jbo.train.model import load_trained

    trained = load_trained(args.checkpoint, which=args.which)
    rows = [r for r in read_db(args.db, split=args.split) if r.is_full]
    if not rows:
        print(f"no full clusters with split={args.split!r} in {args.db}", file=sys.stderr)
        return 2
    res = model_per_order(trained.model, trained.params, rows, max_order=args.max_order)
    k = res["per_order"].shape[1]
    print("cluster".ljust(20) + " n " + "".join(f"{'E^(%d)' % (j + 1):>11}" for j in range(k))
          + "   (meV/atom)")
    out = []
    for r, per, n in zip(rows, res["per_order"], res["n"]):
        print(f"{r.cluster:<20}{n:>2} " + "".join(f"{1e3 * v / n:>11.2f}" for v in per))
        out.append({"cluster": r.cluster, "n": int(n), "energy_ev": r.energy,
                    "per_order_ev": np.asarray(per).tolist()})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jbo`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "label":
        from jbo.data.__main__ import main as label_main
        return int(label_main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    import jbo  # noqa: F401  (float64)
    from jbo.data.store import StoreError

    try:
        return {"train": _train, "decompose": _decompose}[args.command](args)
    except (ValueError, StoreError, OSError) as exc:  # bad input: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
