"""The ``jbo`` command: one parser for training, decomposition and the reference data.

    jbo train --db data/h_clusters.npz --model soap_bpnn --lam 1 --order 2 --out runs/reg
    jbo decompose runs/reg --db data/h_clusters.npz --split heldout
    jbo decompose --calculator emt --structures clusters.extxyz   (any ASE calculator)
    jbo data {generate,label,pack,validate,export,mbe,summary,compact} ...

``jbo train``'s options are generated from :class:`~jbo.train.TrainConfig` and
:class:`~jbo.train.RegularizerConfig` (:mod:`jbo.configargs`); ``python -m jbo.data ...`` is
``jbo data ...``. Run ``jbo <command> --help`` for the options of each command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jbo import compilation_cache
from jbo.configargs import add_config_args, config_from_args
from jbo.data import cli as data_cli

__all__ = ["main", "build_parser", "add_train_args", "train_config"]

_EPILOG = """examples:
  jbo train --model soap_bpnn --makeup up_to:3 --epochs 50 --out runs/plain
  jbo train --model soap_bpnn --lam 1.0 --order 2 --out runs/reg
  jbo decompose runs/reg --split heldout --json spectra.json
  jbo decompose --calculator emt --structures clusters.extxyz --max-order 4 --json emt.json
  jbo data summary --db data/h_clusters.npz

Energies are in eV (per atom in meV/atom where stated), lengths in Å. See docs/CONTRACTS.md
for the ase.db schema the dataset follows."""


# options of `jbo train` that differ from the dataclass defaults: the truncation penalty is
# the practical one (~2.5x a plain step instead of ~15x)
TRAIN_DEFAULTS = {"mode": "truncation"}


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Every :class:`TrainConfig` / :class:`RegularizerConfig` field as a ``jbo train`` option
    (``--reg-*`` for the regularizer, ``--lam``/``--order`` for its strength and order)."""
    from jbo.train.config import RegularizerConfig, TrainConfig

    add_config_args(p, TrainConfig, exclude=("regularizer",), required=("out_dir",))
    add_config_args(p.add_argument_group("body-order regularizer"), RegularizerConfig,
                    prefix="reg-", defaults=TRAIN_DEFAULTS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jbo", description="Measure and control the body order of ML interatomic "
        "potentials: train a model (optionally with the body-order regularizer), decompose "
        "any trained model into E^(1), E^(2), ... , or label reference clusters.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{train,decompose,data}")

    t = sub.add_parser("train", help="train a model on an ase.db dataset",
                       description="Train a jbo.models model with energy (+force) losses, "
                       "checkpoints (resumable), CSV/TensorBoard metrics and the optional "
                       "body-order regularizer (penalizing interaction orders k > K).")
    add_train_args(t)
    t.set_defaults(fn=_train)

    d = sub.add_parser("decompose", help="body-order spectrum of a trained model or any "
                       "ASE calculator",
                       description="Decompose energies into body orders E^(k): a trained "
                       "checkpoint on the clusters of an ase.db, or any ASE calculator "
                       "(--calculator) on the structures of any file ASE reads (exhaustive for "
                       "N <= 16; use --max-order or --cutoff for larger clusters).")
    d.add_argument("checkpoint", nargs="?", default=None,
                   help="run folder of `jbo train` (or its checkpoints/), or a model file of "
                   "jbo.models.save; omit with --calculator")
    d.add_argument("--calculator", default=None, help="emt | lj | module:factory (a function "
                   "returning an ASE calculator): decompose it instead of a checkpoint")
    d.add_argument("--structures", default=None, help="decompose these structures (any file "
                   "ase.io.read takes: extxyz, xyz, traj, ase.db; all frames); required with "
                   "--calculator, instead of --db for a checkpoint")
    d.add_argument("--db", default=None, help="checkpoint without --structures: clusters to "
                   "decompose (default data/h_clusters.npz)")
    d.add_argument("--split", default=None, help="with --db: rows with this split (full "
                   "clusters; default heldout)")
    d.add_argument("--max-order", type=int, default=None, help="truncate at this order")
    d.add_argument("--cutoff", default=None, help="connected mode: only subsets connected "
                   "within this cutoff (Å) of a local model or calculator")
    d.add_argument("--which", default=None, choices=["best", "latest"], help="run folder only: its "
                   "best (default) or latest parameters")
    d.add_argument("--pbc", default=None, choices=["refuse", "vacuum"], help="with "
                   "--structures: periodic structures are refused (default) unless 'vacuum' "
                   "(drop the cell: isolated cluster)")
    d.add_argument("--workers", type=int, default=None, help="--calculator only: processes "
                   "evaluating subclusters (default 1)")
    d.add_argument("--cache", default=None, help="--calculator only: SQLite file caching "
                   "subcluster energies (a killed run resumes from it)")
    d.add_argument("--on-error", default=None, choices=["raise", "nan"], help="--calculator "
                   "only: a failing subcluster stops the run (raise, default) or gets NaN, and "
                   "so does every term containing it (nan)")
    d.add_argument("--json", default=None, help="also write the results to this JSON file")
    d.add_argument("--plot", default=None, help="spectrum plot |E^(k)|/n vs k (PNG; default: "
                   "next to --json)")
    d.set_defaults(fn=_decompose)
    data_cli.add_commands(sub.add_parser(
        "data", help="reference data: generate, label, pack, validate, export, mbe, summary",
        description="Reference data: generate random H clusters, label them (PySCF, "
        "resumable, parallel), pack/validate/export a dataset, its MBE and summary "
        "(`python -m jbo.data ...` is the same)").add_subparsers(
            dest="data_command", metavar="COMMAND", required=True))
    return p


def train_config(args: argparse.Namespace):
    """The :class:`TrainConfig` of parsed ``jbo train`` options (ValueError names a bad one)."""
    from jbo.train.config import RegularizerConfig, TrainConfig

    reg = config_from_args(RegularizerConfig, args, prefix="reg-")
    return config_from_args(TrainConfig, args, regularizer=reg)


def _train(args) -> int:
    from jbo.analysis import learned_rotational_error
    from jbo.train import train

    from jbo import models

    res = train(args.config)
    best = min((h["val_mae"] for h in res.history), default=float("nan"))
    rot, meta = "", {}
    err = learned_rotational_error(res.model, res.data.val)  # PET: invariance is learned
    if err is not None:
        meta["val_rotational_error"] = err
        rot = (f"; rotational error {err['mean_std_mev_per_atom']:.3g} meV/atom (std of E/n "
               f"over {err['n_rotations']} random rotations, validation clusters)")
    path = models.save(f"{args.out}/model.jbo", res.model, metadata=meta) \
        if res.model.module.__module__.startswith("jbo.models") else None
    score = (f"best val MAE {best:.2f} meV/atom" if res.data.val else
             "no validation data, final parameters kept")
    print(f"{res.stop_reason}: {len(res.steps)} steps in {res.seconds:.1f} s; {score}{rot}; "
          f"run in {args.out}"
          + (f", model file {path}" if path else ""))
    return 0


def _decompose(args) -> int:
    """``jbo decompose``: every option acts for each target it names, or is refused."""
    from jbo import decompose_cli

    return decompose_cli.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jbo`` console script; returns the exit status."""
    from jbo.data.store import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    compilation_cache.enable()  # a second process loads its compiled programs from disk
    if args.command is None:
        parser.print_help()
        return 1
    if args.command == "train":  # every option checked before any data is read
        try:
            args.config = train_config(args)
        except ValueError as err:
            parser.error(f"train: {err}")
    expected = (ValueError, StoreError, OSError) + ((KeyError,) if args.command == "data" else ())
    try:
        return int(args.fn(args) or 0)
    except expected as exc:  # bad input: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
