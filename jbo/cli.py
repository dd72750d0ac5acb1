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
import json
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
    d.add_argument("--db", default="data/h_clusters.npz", help="clusters to decompose")
    d.add_argument("--split", default="heldout", help="rows with this split (full clusters)")
    d.add_argument("--max-order", type=int, default=None, help="truncate at this order")
    d.add_argument("--which", default="best", choices=["best", "latest"])
    d.add_argument("--json", default=None, help="also write the results to this JSON file")
    d.add_argument("--calculator", default=None, help="emt | lj | module:factory (a function "
                   "returning an ASE calculator): decompose it instead of a checkpoint")
    d.add_argument("--structures", default=None, help="structures for --calculator: any file "
                   "ase.io.read takes (extxyz, xyz, traj, ase.db), all frames")
    d.add_argument("--cutoff", type=float, default=None, help="connected mode: only subsets "
                   "connected within this cutoff (Å) of a local calculator")
    d.add_argument("--pbc", default="refuse", choices=["refuse", "vacuum"], help="periodic "
                   "structures are refused unless 'vacuum' (drop the cell: isolated cluster)")
    d.add_argument("--workers", type=int, default=1, help="processes evaluating subclusters")
    d.add_argument("--cache", default=None, help="SQLite file caching subcluster energies "
                   "(a killed run resumes from it)")
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
    err = learned_rotational_error(res.trained(), res.data.val)  # PET: invariance is learned
    if err is not None:
        meta["val_rotational_error"] = err
        rot = (f"; rotational error {err['mean_std_mev_per_atom']:.3g} meV/atom (std of E/n "
               f"over {err['n_rotations']} random rotations, validation clusters)")
    path = models.save(f"{args.out}/model.jbo", res, metadata=meta) \
        if res.module.__module__.startswith("jbo.models") else None
    print(f"{res.stop_reason}: {len(res.steps)} steps in {res.seconds:.1f} s; best val MAE "
          f"{best:.2f} meV/atom{rot}; run in {args.out}"
          + (f", model file {path}" if path else ""))
    return 0


def _decompose(args) -> int:
    import numpy as np

    if (args.checkpoint is None) == (args.calculator is None):
        print("jbo decompose: give a checkpoint or --calculator (with --structures), not both",
              file=sys.stderr)
        return 2
    if args.calculator is not None:
        return _decompose_calculator(args)

    from jbo.analysis import decompose_records
    from jbo.data.records import read_records
    from jbo.train.model import load_trained

    trained = load_trained(args.checkpoint, which=args.which)
    rows = [r for r in read_records(args.db, split=args.split) if r.is_full]
    if not rows:
        print(f"no full clusters with split={args.split!r} in {args.db}", file=sys.stderr)
        return 2
    res = decompose_records(trained, rows, max_order=args.max_order, chunk=8)
    per_order = np.nan_to_num(res.orders, nan=0.0)  # E^(k > n) = 0: no subsets of that size
    k = per_order.shape[1]
    print("cluster".ljust(20) + " n " + "".join(f"{'E^(%d)' % (j + 1):>11}" for j in range(k))
          + "   (meV/atom)")
    out = []
    for r, per, n in zip(rows, per_order, res.n):
        print(f"{r.cluster:<20}{n:>2} " + "".join(f"{1e3 * v / n:>11.2f}" for v in per))
        out.append({"cluster": r.cluster, "n": int(n), "energy_ev": r.energy,
                    "per_order_ev": np.asarray(per).tolist()})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def _decompose_calculator(args) -> int:
    """``jbo decompose --calculator ... --structures FILE``: one line per structure."""
    from pathlib import Path

    import ase.io
    import numpy as np
    from ase.io.formats import UnknownFileTypeError

    from jbo import plots
    from jbo.adapters import calculator_from_spec, from_ase, from_structures, known_cutoff
    from jbo.decompose import body_orders
    from jbo.host import HostPotential, SubclusterError

    if args.structures is None:
        print("jbo decompose: --calculator needs --structures FILE", file=sys.stderr)
        return 2
    pot = None
    try:
        frames = ase.io.read(args.structures, index=":")
        calc = calculator_from_spec(args.calculator)
        if isinstance(calc, HostPotential):
            pot = calc
        else:  # a known calculator's own cutoff; otherwise the user's --cutoff vouches for it
            known = known_cutoff(calc)
            pot = from_ase(calc, cutoff=args.cutoff if known is None else known,
                           workers=args.workers, cache=args.cache or True)
        results = []
        for atoms in frames:
            pos, numbers, mask = from_structures(atoms, pbc=args.pbc)
            results.append(body_orders(pot, pos, numbers, atom_mask=mask,
                                       max_order=args.max_order, cutoff=args.cutoff))
    except (OSError, ValueError, MemoryError, SubclusterError, UnknownFileTypeError) as exc:
        print(f"jbo decompose: {exc}", file=sys.stderr)
        return 2
    finally:
        if pot is not None:
            pot.close()
    k = max(len(r.per_order) for r in results)
    print("structure".ljust(22) + " n " + "".join(f"{'E^(%d)' % (j + 1):>11}" for j in range(k))
          + "   (meV/atom)")
    out, series = [], {}
    for i, (a, r) in enumerate(zip(frames, results)):
        n, per = len(a), np.asarray(r.per_order)
        name = f"{i}:{a.get_chemical_formula()}"
        print(f"{name:<22}{n:>2} " + "".join(f"{1e3 * v / n:>11.2f}" for v in per))
        out.append({"structure": i, "formula": a.get_chemical_formula(), "n": n,
                    "energy_ev": float(r.total), "per_order_ev": per.tolist(), "mode": r.mode})
        series[name] = (np.arange(1, len(per) + 1), 1e3 * np.abs(per) / n)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if plot:
        plots.curves(dict(list(series.items())[:12]), plot, "body order k",
                     "|E^(k)| / n (meV/atom)", title=f"{args.calculator}: body-order spectrum",
                     logy=True)
    return 0


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
