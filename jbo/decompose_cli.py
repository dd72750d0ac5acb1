"""``jbo decompose``: a trained model (run folder or model file) or an ASE calculator, on the
clusters of a database or the structures of any file ASE reads.

Each option acts for every target it names, or is refused with one line saying which target it
applies to (nothing is silently ignored):

============  =========================  ============================================
option        applies to                 otherwise
============  =========================  ============================================
--structures  every target               (required with --calculator)
--db/--split  a checkpoint, no           refused
              --structures
--which       a run folder               refused (a model file holds one set)
--pbc         --structures               refused
--workers,    --calculator (evaluated    refused (a jbo model is evaluated in JAX)
--cache,      on the host)
--on-error
--cutoff, --max-order, --json, --plot: every target
============  =========================  ============================================

Bad input exits with status 2 and one line on stderr; a failed result check (non-finite
energies, Σ_k E^(k) ≠ E with K = N) with status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

__all__ = ["run"]

_DEFAULTS = {"db": "data/h_clusters.npz", "split": "heldout", "which": "best", "pbc": "refuse",
             "workers": 1, "on_error": "raise"}


class _Refused(ValueError):
    """An option that does not apply to the chosen target."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_options(args: argparse.Namespace) -> str:
    """The target (``"calculator"``, ``"file"`` or ``"run"``) after refusing options that do
    not apply to it; fills in the defaults of the others."""
    if (args.checkpoint is None) == (args.calculator is None):
        raise _Refused("give a checkpoint (run folder or model file) or --calculator, not both")
    if args.calculator is not None:
        target = "calculator"
        if args.structures is None:
            raise _Refused("--calculator needs --structures FILE (the structures to decompose)")
    else:
        target = "file" if Path(args.checkpoint).is_file() else "run"
        if target == "file":  # a metatomic export or a MACE model, recognised by content
            from jbo.foreign import identify

            target = "file" if identify(args.checkpoint) == "jbo" else "foreign"
    given = {k for k in _DEFAULTS if getattr(args, k) is not None} | \
        {k for k in ("cache",) if args.cache is not None}
    rules = [
        ({"db", "split"}, target != "calculator" and args.structures is None,
         "apply to a checkpoint decomposed on database clusters (without --structures)"),
        ({"which"}, target == "run", "applies to a run folder (best or latest parameters); "
         + ("a model file holds one parameter set" if target == "file" else
            "--calculator has none")),
        ({"pbc"}, args.structures is not None, "applies to --structures"),
        ({"workers"}, target == "calculator",
         "applies to --calculator (ASE calculators in worker processes)"),
        ({"cache", "on_error"}, target in ("calculator", "foreign"),
         "applies to --calculator and metatomic/MACE model files (subclusters evaluated on "
         "the host); a jbo model is evaluated in JAX"),
    ]
    for names, ok, why in rules:
        bad = sorted(given & names)
        if bad and not ok:
            raise _Refused(f"{'/'.join(_flag(b) for b in bad)} {why}: drop it")
    for k, v in _DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.target = target
    return target


def _cutoff(text: str | None) -> float | None:
    from jbo.geometry import check_cutoff

    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _Refused(f"--cutoff must be a length in Å, got {text!r}") from None
    return check_cutoff(value, "--cutoff", optional=False)


def run(args: argparse.Namespace) -> int:
    """Run ``jbo decompose`` on parsed options; returns the exit status."""
    from ase.io.formats import UnknownFileTypeError

    from jbo.host import SubclusterError

    try:
        target = _check_options(args)
        args.cutoff = _cutoff(args.cutoff)
        if target == "calculator":
            rows = _calculator(args)
        else:
            model = _model(args)
            try:
                rows = (_frames(model, _read(args.structures), args)
                        if args.structures is not None else _database(model, args))
            finally:
                getattr(model, "close", lambda: None)()
    except ArithmeticError as exc:  # a result check failed (non-finite, Σ E^(k) ≠ E)
        print(f"jbo decompose: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, TypeError, MemoryError, SubclusterError,
            UnknownFileTypeError) as exc:
        print(f"jbo decompose: {_one_line(exc)}", file=sys.stderr)
        return 2
    _report(rows, args)
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _model(args):
    from jbo.calculator import load_checkpoint
    from jbo.train.checkpoints import CheckpointError

    if args.target == "foreign":
        from jbo.foreign import load_potential

        return load_potential(args.checkpoint, cache=args.cache or True,
                              on_error=args.on_error)
    try:
        return load_checkpoint(args.checkpoint, which=args.which)
    except CheckpointError as exc:
        raise ValueError(f"{args.checkpoint} holds no readable checkpoint ({exc}): give the "
                         "out_dir of `jbo train` or a model file of jbo.models.save") from None


def _read(path: str) -> list:
    import ase.io

    frames = ase.io.read(path, index=":")
    if not frames:
        raise ValueError(f"{path} holds no structures")
    return frames


def _calculator(args) -> list[dict]:
    from jbo.adapters import calculator_from_spec, from_ase, known_cutoff
    from jbo.host import HostPotential

    frames = _read(args.structures)
    calc = calculator_from_spec(args.calculator)
    cache = args.cache or True
    if isinstance(calc, HostPotential):  # a factory's ready host potential: options set there
        pot = calc
        if args.cache is not None or args.workers != 1 or args.on_error != "raise":
            raise _Refused(f"{args.calculator} returns a ready HostPotential: set workers, "
                           "cache and on_error in the factory, not with --workers/--cache/"
                           "--on-error")
    else:  # a known calculator's own cutoff; otherwise the user's --cutoff vouches for it
        known = known_cutoff(calc)
        pot = from_ase(calc, cutoff=args.cutoff if known is None else known,
                       workers=args.workers, cache=cache, on_error=args.on_error)
    try:
        return _frames(pot, frames, args)
    finally:
        pot.close()


def _frames(pot, frames, args) -> list[dict]:
    """One row per structure, the layout ``--json`` writes for ``--structures``."""
    from jbo.adapters import from_structures
    from jbo.decompose import body_orders

    rows = []
    for i, atoms in enumerate(frames):
        pos, numbers, mask = from_structures(atoms, pbc=args.pbc)
        r = body_orders(pot, pos, numbers, atom_mask=mask, max_order=args.max_order,
                        cutoff=args.cutoff)
        rows.append({"structure": i, "formula": atoms.get_chemical_formula(), "n": len(atoms),
                     "energy_ev": float(r.total), "per_order_ev": np.asarray(r.per_order,
                                                                             float).tolist(),
                     "mode": r.mode})
    return rows


def _database(trained, args) -> list[dict]:
    """One row per full cluster of ``--db`` with ``--split`` (the database layout)."""
    from jbo.data.records import read_records

    records = [r for r in read_records(args.db, split=args.split) if r.is_full]
    if not records:
        raise ValueError(f"no full clusters with split={args.split!r} in {args.db}")
    if args.cutoff is None and args.target != "foreign":
        from jbo.analysis import decompose_records

        res = decompose_records(trained, records, max_order=args.max_order, chunk=8)
        per_order = [np.asarray(p, float) for p in res.orders]
    else:  # connected mode (one plan per cluster's geometry), or a host-evaluated model
        from jbo.decompose import body_orders

        per_order = [np.asarray(body_orders(trained, r.positions, r.species,
                                            max_order=args.max_order,
                                            cutoff=args.cutoff).per_order, float)
                     for r in records]
    width = max(len(p) for p in per_order)
    rows = []
    for r, per in zip(records, per_order):
        per = np.nan_to_num(np.pad(per, (0, width - len(per)), constant_values=np.nan), nan=0.0)
        rows.append({"cluster": r.cluster, "n": int(r.n_atoms), "energy_ev": r.energy,
                     "per_order_ev": per.tolist()})  # E^(k > n) = 0: no subsets of that size
    return rows


def _finite_or_none(x):
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _report(rows: list[dict], args) -> None:
    """Print the table (meV/atom), write ``--json`` (NaN as null) and the ``--plot``."""
    from jbo import plots

    key = "structure" if "structure" in rows[0] else "cluster"
    names = [f"{r['structure']}:{r['formula']}" if key == "structure" else r["cluster"]
             for r in rows]
    k = max(len(r["per_order_ev"]) for r in rows)
    print(key.ljust(22) + " n " + "".join(f"{'E^(%d)' % (j + 1):>11}" for j in range(k))
          + "   (meV/atom)")
    series = {}
    for name, r in zip(names, rows):
        n, per = r["n"], np.asarray(r["per_order_ev"], float)
        print(f"{name:<22}{n:>2} " + "".join(f"{1e3 * v / n:>11.2f}" for v in per))
        series[name] = (np.arange(1, len(per) + 1), 1e3 * np.abs(per) / n)
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{k_: _finite_or_none(v) for k_, v in r.items()} for r in rows], indent=1))
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if plot:
        what = args.calculator or Path(args.checkpoint).name
        plots.curves(dict(list(series.items())[:12]), plot, "body order k",
                     "|E^(k)| / n (meV/atom)", title=f"{what}: body-order spectrum", logy=True)
