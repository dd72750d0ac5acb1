"""The reference-data commands: ``jbo data {generate,label,pack,validate,export,mbe,summary,compact}``.

:func:`add_commands` adds them to the one ``jbo`` parser (:mod:`jbo.cli`);
``python -m jbo.data ...`` is the same as ``jbo data ...``. Examples::

    jbo data generate --sizes 4-8 --regimes low,high --count 30 --seed 0 -o c.extxyz
    jbo data label --db data/work/labels.db --sizes 4-8 --regimes low,high \\
        --count 30 --seed 0 --split train --subsets all --method fci --basis sto-3g
    jbo data label --db refs.db --clusters c.extxyz --scheduler tcp://host:8786
        (the workers of an existing cluster need jbo and PySCF importable)
    jbo data pack --db data/work/labels.db -o data/h_clusters.npz
    jbo data validate --db data/h_clusters.npz --sample 200
    jbo data export --db data/h_clusters.npz -o rows.extxyz
    jbo data mbe --db data/h_clusters.npz
    jbo data summary --db data/h_clusters.npz --markdown
    jbo data compact --db data/work/labels.db --drop-indices
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import numpy as np

from jbo.configargs import count, positive_int, positive_float

__all__ = ["add_commands", "parse_sizes", "parse_count"]


def parse_sizes(text: str) -> list[int]:
    """``"4-8"`` -> [4..8]; ``"4,6,9-10"`` -> [4, 6, 9, 10]."""
    out: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(
            f"bad sizes {text!r}: give atom counts >= 1, e.g. 4-8 or 4,6,9-10")
    return out


def parse_count(text: str) -> int | dict[int, int]:
    """``"10"`` -> 10 per size; ``"4:40,5:20"`` -> {4: 40, 5: 20} (per size); counts >= 1."""
    try:
        if ":" not in text:
            out: int | dict[int, int] = int(text)
            counts = [out]
        else:
            out = {int(k): int(v) for k, v in (p.split(":") for p in text.split(","))}
            counts = list(out.values())
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"bad count {text!r}: give clusters per size >= 1, e.g. 10 or 4:40,5:20")
    return out


def _add_generation(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--sizes", type=parse_sizes, required=required,
                   help="cluster sizes, e.g. 4-8 or 9,10,12")
    p.add_argument("--regimes", default="low,high",
                   help="comma-separated density regimes (low: NN 1.5-2.5 A, high: 0.7-1.2 A)")
    p.add_argument("--count", type=parse_count, default=10,
                   help="clusters per (size, regime): N, or per size as 4:40,5:20,...")
    p.add_argument("--seed", type=count, default=0, help="first generator seed (>= 0)")
    p.add_argument("--split", default="train", help="split name stored with each cluster")


def _parents(args) -> list:
    from ase.io import read

    from jbo.data.clusters import generate

    if getattr(args, "clusters", None):
        parents = []
        for f in args.clusters:
            try:
                parents += read(f, index=":", format="extxyz")
            except (FileNotFoundError, PermissionError, IsADirectoryError):
                raise  # the OS's own one-line message names the file
            except Exception as exc:  # ase.io's parsers raise anything on a foreign file
                raise ValueError(f"cannot read clusters from {f} as extxyz ({exc}); pass the "
                                 "file written by `generate`") from exc
        for a in parents:
            if "cluster" not in a.info:
                raise SystemExit(f"{args.clusters}: structures need a 'cluster' id in info")
            a.info.setdefault("n_parent", len(a))
        return parents
    if not args.sizes:
        raise SystemExit("give --clusters FILE or --sizes/--regimes/--count/--seed")
    return generate(args.sizes, args.regimes.split(","), args.count, args.seed, args.split)


def _cmd_generate(args) -> int:
    from ase.io import write

    parents = _parents(args)
    write(args.output, parents, format="extxyz")
    print(f"wrote {len(parents)} clusters to {args.output}")
    return 0


def _cmd_label(args) -> int:
    from jbo.data.label import label

    parents = _parents(args)
    rep = label(args.db, parents, args.method, args.basis, subsets=args.subsets,
                forces=not args.no_forces, scheduler=args.scheduler, n_workers=args.workers,
                retry_failed=args.retry_failed, progress=not args.no_progress)
    print(rep)
    return 0


def _cmd_mbe(args) -> int:
    from jbo.data.mbe import all_mbe, reference_mbe
    from jbo.data.records import read_parents

    sel = dict(method=args.method, basis=args.basis)
    if args.cluster:
        found = read_parents(args.db, cluster=args.cluster, **sel)
        if not found:
            raise ValueError(f"no labelled cluster {args.cluster!r} ({args.method}/{args.basis}) "
                             f"in {args.db}")
        r = reference_mbe(found[0])
        print(f"{r.cluster}: n={r.n} total={r.total:.6f} eV")
        print(f"{'k':>3} {'E^(k) / eV':>14} {'E_<=k / eV':>14}")
        for k in range(r.n):
            print(f"{k + 1:>3} {r.per_order[k]:>14.6f} {r.truncated[k]:>14.6f}")
        return 0
    res, skipped = all_mbe(read_parents(args.db, **sel), args.split or None)
    groups = defaultdict(list)
    for r in res:
        groups[(r.regime, r.n)].append(r)
    print(f"reference MBE ({args.method}/{args.basis}), mean |E^(k)| per cluster in meV:")
    kmax = max((r.n for r in res), default=0)
    print(f"{'regime':>6} {'n':>3} {'count':>5} " + " ".join(f"{'k=' + str(k):>9}"
                                                         for k in range(1, kmax + 1)))
    for (reg, n), rs in sorted(groups.items()):
        mean = np.mean([np.abs(r.per_order) for r in rs], axis=0) * 1e3
        print(f"{reg:>6} {n:>3} {len(rs):>5} " + " ".join(f"{v:>9.2f}" for v in mean))
    worst = max((abs(r.truncated[-1] - r.total) for r in res), default=0.0)
    print(f"{len(res)} complete clusters; max |E_<=n - E| = {worst:.2e} eV; "
          f"{len(skipped)} incomplete")
    if args.output:
        np.savez(args.output, cluster=np.array([r.cluster for r in res]),
                 n=np.array([r.n for r in res]), regime=np.array([r.regime for r in res]),
                 total=np.array([r.total for r in res]),
                 per_order=np.array([np.pad(r.per_order, (0, kmax - r.n)) for r in res]))
        print(f"wrote {args.output}")
    return 0


def _summary_compact(args) -> int:
    from jbo.data.records import read_parents

    parents = read_parents(args.db)
    groups: dict[tuple, list] = defaultdict(list)
    for p in parents:
        groups[(p.split, p.regime, p.n)].append(p)
    head = ("split", "regime", "n", "parents", "complete", "structures", "2S of full: count")
    md = args.markdown
    print(("| " + " | ".join(head) + " |\n|" + "---|" * len(head)) if md else
          "  ".join(f"{h:>11}" for h in head))
    for k in sorted(groups):
        ps = groups[k]
        spins = Counter(int(p.spin[j]) for p in ps
                        for j in np.flatnonzero(p.subsets == p.full).tolist())
        vals = (*k, len(ps), sum(p.is_complete for p in ps), sum(len(p.subsets) for p in ps),
                " ".join(f"{t}:{c}" for t, c in sorted(spins.items())))
        print(("| " + " | ".join(map(str, vals)) + " |") if md else
              "  ".join(f"{v!s:>11}" for v in vals))
    print(f"\n{len(parents)} parents, {sum(len(p.subsets) for p in parents)} labelled "
          "structures")
    return 0


def _cmd_summary(args) -> int:
    from jbo.data.records import is_compact
    from jbo.data.store import connect

    if is_compact(args.db):
        return _summary_compact(args)

    db = connect(args.db, create=False)
    rows = list(db.select(include_data=False, columns=["id", "key_value_pairs"]))
    key = lambda r: (r.get("split", ""), r.get("regime", ""), int(r.n_parent))  # noqa: E731
    parents, n_ok, n_fail = defaultdict(set), Counter(), Counter()
    spins, methods, reasons = Counter(), Counter(), Counter()
    for r in rows:
        if "cluster" not in r:
            continue
        k = key(r)
        parents[k].add(r.cluster)
        methods[(r.method, r.basis)] += 1
        if r.status == "ok":
            n_ok[k] += 1
            if int(r.subset) == (1 << int(r.n_parent)) - 1:
                spins[(int(r.n_parent) % 2, int(r.spin))] += 1
        else:
            n_fail[k] += 1
            reasons[r.get("reason", "?")[:80]] += 1
    md = args.markdown
    head = ("split", "regime", "n", "parents", "rows ok", "failed")
    print(("| " + " | ".join(head) + " |\n|" + "---|" * len(head)) if md else
          "  ".join(f"{h:>11}" for h in head))
    for k in sorted(parents):
        vals = (*k, len(parents[k]), n_ok[k], n_fail[k])
        print(("| " + " | ".join(map(str, vals)) + " |") if md else
              "  ".join(f"{v!s:>11}" for v in vals))
    tot = (len(rows), sum(n_ok.values()), sum(n_fail.values()))
    print(f"\n{tot[0]} rows: {tot[1]} ok, {tot[2]} failed")
    print("method/basis:", dict(methods))
    print("full-cluster spin (2S) by electron parity:",
          {f"{'odd' if p else 'even'} N, 2S={s}": c for (p, s), c in sorted(spins.items())})
    for why, c in reasons.most_common(10):
        print(f"  failure x{c}: {why}")
    return 0


def _cmd_pack(args) -> int:
    from jbo.data.records import read_parents, write_compact

    parents = read_parents(args.db)
    size = write_compact(parents, args.output)
    n = sum(len(p.subsets) for p in parents)
    print(f"packed {len(parents)} parents ({n} labelled structures) from {args.db} into "
          f"{args.output}: {size / 1e6:.2f} MB")
    return 0


def _cmd_export(args) -> int:
    from jbo.data.records import export, export_format, read_parents

    export_format(args.output)  # an unknown format is refused before the data is read
    n = export(read_parents(args.db), args.output)
    print(f"exported {n} structures to {args.output}")
    return 0


def _cmd_validate(args) -> int:
    from jbo.data.records import read_parents
    from jbo.data.validate import format_report, validate

    parents = read_parents(args.db, check=False)  # geometry faults are reported, not raised
    problems = validate(parents, sample=None if args.all else args.sample, seed=args.seed,
                        far=args.far, far_eps=args.far_eps * 1e-3, tol=args.tol * 1e-3,
                        progress=not args.no_progress, workers=args.workers,
                        journal=args.journal)
    print(format_report(problems, parents))
    if args.fix and problems:
        return _fix(args, parents, problems)
    return 1 if problems else 0


def _fix(args, parents, problems) -> int:
    """Relabel what failed, write the corrected file and a JSON list of the changes."""
    import json

    from jbo.data.records import write_compact
    from jbo.data.validate import format_report, repair, validate

    if any(p.check != "relabel" for p in problems):
        print("--fix relabels wrong labels only; fix the other problems first", flush=True)
        return 1
    fixed, changes = repair(parents, problems, progress=not args.no_progress)
    again = validate(fixed, sample=0)  # the invariants of the corrected file
    if again:
        print(format_report(again, fixed))
        return 1
    size = write_compact(fixed, args.fix)
    log = str(args.fix) + ".changes.json"
    with open(log, "w") as fh:
        json.dump(changes, fh, indent=1)
    print(f"wrote {args.fix} ({size / 1e6:.2f} MB): {len(changes)} labels relabelled "
          f"(list in {log})")
    return 0


def _cmd_compact(args) -> int:
    from jbo.data.store import compact

    before, after = compact(args.db, args.drop_indices)
    print(f"{args.db}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the reference-data subcommands to ``sub`` (``jbo data``'s subparsers); each sets
    ``fn``, which takes the parsed arguments and returns the exit status."""
    g = sub.add_parser("generate", help="write random H clusters to an extxyz file")
    _add_generation(g, required=True)
    g.add_argument("-o", "--output", required=True)
    g.set_defaults(fn=_cmd_generate)
    lab = sub.add_parser("label", help="label clusters (and subclusters) into an ase.db")
    lab.add_argument("--db", required=True, help="ase.db file or postgresql:// URL")
    lab.add_argument("--clusters", nargs="+", help="extxyz file(s) from `generate`")
    _add_generation(lab, required=False)
    lab.add_argument("--method", default="fci", help="fci | uhf | uccsd(t) | dmrg")
    lab.add_argument("--basis", default="sto-3g")
    lab.add_argument("--subsets", default="all", choices=("all", "full"))
    lab.add_argument("--no-forces", action="store_true")
    lab.add_argument("--workers", type=count, default=2,
                     help="LocalCluster worker processes (0: in this process, no dask)")
    lab.add_argument("--scheduler", default=None, help="address of a running dask scheduler")
    lab.add_argument("--retry-failed", action="store_true", help="label failed rows again")
    lab.add_argument("--no-progress", action="store_true")
    lab.set_defaults(fn=_cmd_label)
    m = sub.add_parser("mbe", help="many-body expansion of the stored reference energies")
    m.add_argument("--db", required=True)
    m.add_argument("--method", default="fci")
    m.add_argument("--basis", default="sto-3g")
    m.add_argument("--split", default="train")
    m.add_argument("--cluster", help="print one cluster's E^(k)")
    m.add_argument("-o", "--output", help="write all E^(k) to an .npz")
    m.set_defaults(fn=_cmd_mbe)
    s = sub.add_parser("summary", help="counts per split, regime and size")
    s.add_argument("--db", required=True)
    s.add_argument("--markdown", action="store_true")
    s.set_defaults(fn=_cmd_summary)
    c = sub.add_parser("compact", help="VACUUM a SQLite database (for shipping)")
    c.add_argument("--db", required=True)
    c.add_argument("--drop-indices", action="store_true",
                   help="drop ase's secondary key indices (a third of a small file)")
    c.set_defaults(fn=_cmd_compact)
    pk = sub.add_parser("pack", help="build the shipped compact .npz from a per-row store")
    pk.add_argument("--db", required=True, help="the labelling store (ase.db file or URL)")
    pk.add_argument("-o", "--output", required=True, help="compact dataset file (.npz)")
    pk.set_defaults(fn=_cmd_pack)
    ex = sub.add_parser("export", help="write a dataset as plain rows (.db, .extxyz, ...)")
    ex.add_argument("--db", required=True, help="compact .npz or per-row store")
    ex.add_argument("-o", "--output", required=True, help="ase.db (.db) or any ASE format")
    ex.set_defaults(fn=_cmd_export)
    v = sub.add_parser("validate", help="check a dataset's invariants; exit 1 naming problems")
    v.add_argument("--db", default="data/h_clusters.npz",
                   help="compact .npz or per-row store (default: the shipped data/h_clusters.npz)")
    v.add_argument("--sample", type=count, default=20,
                   help="labels to recompute (default 20; 0: none)")
    v.add_argument("--all", action="store_true", help="recompute every label")
    v.add_argument("--workers", type=positive_int, default=1,
                   help="relabelling processes (one thread each)")
    v.add_argument("--fix", default=None, metavar="OUT.npz",
                   help="relabel (with forces) every label that failed the relabelling check "
                        "and write the corrected compact file here")
    v.add_argument("--journal", default=None,
                   help="JSON-lines file of recomputed labels: a rerun skips what it holds "
                        "(resumable --all)")
    v.add_argument("--seed", type=count, default=0, help="seed of the relabelling sample")
    v.add_argument("--far", type=positive_float, default=6.0, help="far-pair distance (Å)")
    v.add_argument("--far-eps", type=positive_float, default=1.0,
                   help="largest |ε| of a far pair (meV)")
    v.add_argument("--tol", type=positive_float, default=1e-3,
                   help="relabelling agreement (meV, default 1e-3)")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(fn=_cmd_validate)
