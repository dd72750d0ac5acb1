"""The paper's genuine models (issue 23, parts 3-4): metatrain PET / SOAP-BPNN and mace-torch
MACE, trained by their own tools on the converged study's exact split of one density regime,
then decomposed by jbo and set beside the Flax zoo model of the same class.

    python -m experiments.genuine train --regime low --model pet [--wall 2400]
    python -m experiments.genuine train --regime low --model pet --makeup up_to:4+atoms --epochs 3
    python -m experiments.genuine evaluate          # every shipped model -> summary + table

``train`` runs in ``runs/genuine/<regime>/<model>/`` (ignored by git; see
:mod:`experiments.genuine_train`) and ships the exported model as
``results/genuine/<regime>/<model>/model.pt`` (metatomic) or ``mace.model``, with
``training.json`` (seconds, epochs, stop, makeup). A cell whose model is shipped is skipped.
``--makeup`` (default ``full``) trains on the converged study's rows of that makeup (validation
and test unchanged) and ships under ``<regime>/<model>-<makeup>/`` (``up_to:4+atoms`` ->
``pet-up_to4_atoms``; :func:`experiments.genuine_train.cell_name`).
``evaluate`` decomposes the shipped models (:func:`jbo.foreign.load_potential`,
:func:`jbo.analysis.decompose_records`) on the test parents, writes
``results/genuine/<regime>/<model>/summary.json``, ``results/genuine/summary.json`` and
``results/genuine/SIDE_BY_SIDE.md``. Energies eV; MAEs meV/atom.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.genuine_train import MODELS, cell_name, prepare, train

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "results" / "genuine"
RUNS = ROOT / "runs" / "genuine"
DB = ROOT / "data" / "h_clusters.npz"
FILE = {"pet": "model.pt", "soap_bpnn": "model.pt", "mace": "mace.model"}


def shipped(regime: str, model: str, makeup: str = "full") -> Path:
    """Where the exported model of (regime, model, makeup) is shipped."""
    return RESULTS / regime / cell_name(model, makeup) / FILE[model]


def cmd_train(args) -> int:
    from jbo.study.regimes import load_regimes

    dest = shipped(args.regime, args.model, args.makeup)
    if dest.exists() and not args.redo:
        print(f"{dest} exists: skipped (--redo trains again)")
        return 0
    data = load_regimes(str(args.db))
    folder = RUNS / args.regime / dest.parent.name
    prepare(data, args.regime, args.model, folder, args.makeup, args.epochs)
    rec = train(args.model, folder, dest, args.wall)
    rec.update(regime=args.regime, model=args.model, makeup=args.makeup,
               bytes=dest.stat().st_size)
    (dest.parent / "training.json").write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.genuine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train and ship one genuine model")
    t.add_argument("--regime", choices=["low", "high"], required=True)
    t.add_argument("--model", choices=MODELS, required=True)
    t.add_argument("--wall", type=float, default=2400.0, help="wall budget in seconds")
    t.add_argument("--makeup", default="full",
                   help="training rows: full, up_to:M, up_to:M+atoms, all (converged study)")
    t.add_argument("--epochs", type=int, default=None,
                   help="instead of the input template's epoch count")
    t.add_argument("--redo", action="store_true")
    t.add_argument("--db", type=Path, default=DB)
    e = sub.add_parser("evaluate", help="decompose every shipped model; write the summaries")
    e.add_argument("--db", type=Path, default=DB)
    args = p.parse_args(argv)
    if args.cmd == "train":
        return cmd_train(args)
    from experiments.genuine_eval import evaluate_all
    evaluate_all(RESULTS, args.db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
