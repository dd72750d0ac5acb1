"""Does the body-order regularizer make a model lower-body-order, and at what accuracy cost?

    python experiments/train_body_order_reg.py            # low-density regime, a few minutes
    python experiments/train_body_order_reg.py --regime both   # both regimes (the old default)
    python experiments/train_body_order_reg.py --quick    # CI: under 2 minutes, writes to a
                                                          # temporary folder, never results/
    python experiments/train_body_order_reg.py --reg-mode terms --lam 0.1 \
        --out results/train_body_order_reg_terms        # the Σ ε(S)² penalty instead
    python experiments/train_body_order_reg.py --model pet --makeup up_to:3 --order 3

Trains the same model twice on the ``--regime`` of ``data/h_clusters.npz`` (default ``low``: the
low-density clusters, where SOAP-BPNN fits; ``both``: every regime of the dataset; same data,
split, seed, energies and forces, the same schedule, convergence rule and budget: see
``--patience``, ``--max-seconds``): without and with the body-order regularizer (default: the
truncation penalty λ ((E − E_MBE(K)) / (n s))², K = 2, λ = 0.5; ``--reg-mode terms``:
λ Σ_{k>K} Σ_{|S|=k} ε(S)² / (n s²)). Then decomposes both (the parameters with the best
validation MAE) on the held-out clusters (``split="heldout"``, H_9..) and on the validation
parents, whose reference MBE is known because every subcluster is
labelled. Writes to ``results/train_body_order_reg/`` (``--quick``: to
``<tempdir>/jbo_train_body_order_reg_quick/`` unless ``--out`` is given, so that CI never
overwrites the committed results; a full run into the default folder also rewrites the
README's table, so one command regenerates everything):

* ``summary.json``: validation/test energy MAE (meV/atom) of each run, E^(k) per order
  (mean and mean |E^(k)|/n, meV/atom; and per cluster in eV) of each run on the test clusters,
  the same on the validation parents next to the reference's E^(k), the high-order (k > K)
  contributions, the accuracy cost, timings;
* ``learning_curves.png`` (validation curves with best and stopping steps),
  ``body_order_spectrum.png``; ``plain.jbo``, ``regularized.jbo`` (``jbo.models.load``);
* ``runs/{plain,regularized}/``: metrics.csv, steps.csv (checkpoints/ and tensorboard/ are
  not committed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jbo  # noqa: E402,F401  (float64)
from experiments.common import write_readme_block  # noqa: E402
from jbo.configargs import add_config_args, config_from_args  # noqa: E402
from jbo.data.records import read_records  # noqa: E402
from jbo import models  # noqa: E402
from jbo.train import RegularizerConfig, TrainConfig, evaluate, train  # noqa: E402
from jbo.train.convergence import describe  # noqa: E402
from jbo import analysis  # noqa: E402

DEFAULT_OUT = ROOT / "results" / "train_body_order_reg"
QUICK_OUT_NAME = "jbo_train_body_order_reg_quick"  # under tempfile.gettempdir(), never results/
HYPERS = {"soap_bpnn": {"max_radial": 6, "max_angular": 4, "hidden": [64, 64]}}
REGIMES = ("low", "high", "both")  # both: every regime of the dataset, no filter
# TrainConfig fields the main job exposes (flags generated from the dataclass) and its
# defaults as (full run, --quick): a cosine schedule over an epoch budget (~8.7k steps of 16
# on either one regime or both; measured: the validation MAE plateaus there; 4x the steps
# gained 5 %), forces at weight 0.1 (1.0 and 0.01 within 5 % of it), the convergence rule as a
# safety stop, and a wall budget as another (a regularised run takes 100-170 s on the shared
# 2-core CPU: the schedule, not the clock, ends both runs)
TRAIN_FIELDS = ("makeup", "baseline_from_atoms", "epochs", "batch_size", "lr", "schedule",
                "force_weight", "eval_every", "patience", "min_improvement",
                "plateau_patience", "ema_decay", "max_seconds", "seed", "rotate")
DEFAULTS = {"schedule": ("cosine", "cosine"), "epochs": (40, 15), "force_weight": (0.1, 0.1),
            "eval_every": (200, 8), "patience": (15, 4), "min_improvement": (0.005, 0.005),
            "plateau_patience": (None, None), "max_seconds": (480.0, 30.0)}
# one regime holds half the parents: twice the epochs for the same number of steps
EPOCHS_ONE_REGIME = (80, 30)
# λ of the truncation penalty, chosen on the low regime's validation MAE (never the held-out
# clusters) so that the regularised run stays within 1.25x of the plain one: measured 2026-12-03,
# plain 8.93 meV/atom; λ = 1: 11.21 (1.26x), 0.5: 10.49 (1.17x), 0.25: 9.78 (1.09x)
LAM = 0.5


def parse_args(argv=None) -> argparse.Namespace:
    shown = ", ".join(f"--{k.replace('_', '-')} {a}/{b}" for k, (a, b) in DEFAULTS.items())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"defaults shown as None (full run/--quick): {shown}; "
                                f"--epochs {EPOCHS_ONE_REGIME[0]}/{EPOCHS_ONE_REGIME[1]} with "
                                "--regime low or high (half the parents, the same steps)")
    p.add_argument("--db", default=str(ROOT / "data" / "h_clusters.npz"))
    p.add_argument("--out", default=None, help=f"output folder (default {_rel(DEFAULT_OUT)}; "
                   f"with --quick <tempdir>/{QUICK_OUT_NAME})")
    p.add_argument("--regime", default="low", choices=REGIMES,
                   help="density regime to train and test on (both: all of the dataset's, "
                   "the main job's default before 2026-12-03)")
    p.add_argument("--model", default="soap_bpnn", help="any of jbo.models.available()")
    p.add_argument("--hypers", default=None, help="model hyperparameters (JSON); default: a "
                   "small model that trains in minutes on a laptop CPU")
    # None = the (full, --quick) default of DEFAULTS; the same rule and budget for both runs
    add_config_args(p, TrainConfig, include=TRAIN_FIELDS,
                    defaults={k: None for k in DEFAULTS})
    add_config_args(p, RegularizerConfig, prefix="reg-", include=("lam", "order", "mode",
                    "batch_size"), defaults={"lam": LAM, "mode": "truncation"})
    p.add_argument("--backend", default=None, choices=["engine", "masks"],
                   help="subset-lattice layout of the penalty: engine (compact, fastest steps; "
                   "default) or masks (3-10x faster to compile; default with --quick)")
    p.add_argument("--test-clusters", type=int, default=None,
                   help="decompose at most this many held-out clusters (smallest first)")
    p.add_argument("--quick", action="store_true", help="CI mode: fewer epochs and clusters")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--readme", action="store_true", help="only rewrite README.md's table "
                   "from OUT/summary.json (no training)")
    args = p.parse_args(argv)
    if args.readme and args.quick:
        p.error("--readme writes README.md from the committed summary; a --quick run is "
                "never committed: drop --quick")
    defaults = dict(DEFAULTS, **({} if args.regime == "both" else {"epochs": EPOCHS_ONE_REGIME}))
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.out is None:
        args.out = str(Path(tempfile.gettempdir()) / QUICK_OUT_NAME if args.quick
                       else DEFAULT_OUT)
    if args.backend is None:
        args.backend = "masks" if args.quick else "engine"
    if args.test_clusters is None:
        args.test_clusters = 6 if args.quick else 10**6
    args.hypers = json.loads(args.hypers) if args.hypers else HYPERS.get(args.model, {})
    return args


def _configs(args) -> dict[str, TrainConfig]:
    base = config_from_args(TrainConfig, args, db=args.db, model=args.model,
                            hypers=args.hypers, resume=False, progress=args.progress,
                            tensorboard=True)
    reg = RegularizerConfig(lam=args.lam, order=args.order, mode=args.reg_mode,
                            batch_size=args.reg_batch, backend=args.backend)
    return {"plain": base.replace(out_dir=f"{args.out}/runs/plain"),
            "regularized": base.replace(out_dir=f"{args.out}/runs/regularized",
                                        regularizer=reg)}


def _stats(s: analysis.Spectra, order: int) -> dict:
    """Spectrum and high-order content of ``s``, overall and per density regime (meV/atom)."""
    return {**analysis.summarize(s, order),
            "by_regime": {reg: analysis.summarize(g, order) for reg, g in s.by_regime().items()}}


def _spectra(model, rows, order: int) -> dict:
    s = analysis.decompose_records(model, rows, chunk=8)
    return {**_stats(s, order),
            "per_cluster": [{"cluster": c, "regime": reg, "n": int(k), "per_order_ev": p}
                            for c, reg, k, p in zip(s.clusters, s.regimes, s.n,
                                                    s.per_cluster())]}


def run(args) -> dict:
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = select_regime(read_records(args.db), args.regime, args.db)
    largest = max((r.n_parent for r in records if r.split == "train"), default=0)
    if not 1 <= args.order < largest:  # checked before any training, not after
        raise ValueError(f"--order {args.order}: the regularizer penalizes orders k > K, but the "
                         f"largest training cluster in {args.db} has {largest} atoms; pass "
                         f"1 <= --order < {largest}")
    runs, summary = {}, {"runs": {}}
    for name, cfg in _configs(args).items():
        print(f"[{name}] training {cfg.model} ({cfg.makeup}, λ={cfg.regularizer.lam})",
              flush=True)
        runs[name] = res = train(cfg, records=records)
        print(f"[{name}] {res.stop_reason}, {len(res.steps)} steps, {res.seconds:.1f} s",
              flush=True)
    data = runs["plain"].data
    test = sorted(data.test, key=lambda r: (r.n_atoms, r.cluster))[:args.test_clusters]
    val_full = sorted(data.val, key=lambda r: r.cluster)
    ref = analysis.reference_spectra([r for r in records if r.cluster in set(data.val_parents)
                                      and r.split == "train"])
    val_rows = [r for r in val_full if r.cluster in ref]
    for name, res in runs.items():
        t1 = time.perf_counter()
        val = evaluate(res.model, data.val, forces=True)
        tst = evaluate(res.model, test, forces=True)
        models.save(out / f"{name}.jbo", res.model, metadata={"run": name, "db": _rel(args.db)})
        entry = {"val_mae_mev_per_atom": val.get("mae"), "val_rmse_mev_per_atom": val.get("rmse"),
                 "test_mae_mev_per_atom": tst.get("mae"),
                 "test_rmse_mev_per_atom": tst.get("rmse"),
                 "val_force_mae_mev_per_angstrom": val.get("force_mae"),
                 "test_force_mae_mev_per_angstrom": tst.get("force_mae"),
                 "train_seconds": res.seconds, "steps": len(res.steps),
                 "evaluations": len(res.history), "stop_reason": res.stop_reason,
                 "convergence_rule": describe(res.config), "lambda": res.config.regularizer.lam,
                 "model_file": f"{name}.jbo",
                 "validation_curve": {"step": [int(h["step"]) for h in res.history],
                                      "val_mae_mev_per_atom": [h["val_mae"]
                                                               for h in res.history],
                                      "lr": [h["lr"] for h in res.history]}}
        # "auto": the first decomposition compiles one model instance (the plain run's pays
        # for it, the regularised run's reuses it) and moves to the compact layout once that pays
        entry["test"] = _spectra(res.model, test, args.order) if test else None
        entry["val"] = _spectra(res.model, val_rows, args.order) if val_rows else None
        rot = analysis.learned_rotational_error(res.model, data.val)  # PET: learned
        if rot is not None:
            entry["val_rotational_error_mev_per_atom"] = rot["mean_std_mev_per_atom"]
            entry["val_rotational_error"] = rot
        entry["decompose_seconds"] = time.perf_counter() - t1
        summary["runs"][name] = entry
        print(f"[{name}] val MAE {entry['val_mae_mev_per_atom']:.2f} meV/atom, decomposed in "
              f"{entry['decompose_seconds']:.1f} s", flush=True)
    if val_rows:
        summary["reference"] = {"val": {**_stats(ref.take([r.cluster for r in val_rows]),
                                                 args.order),
                                        "clusters": [r.cluster for r in val_rows]}}
    p, r = summary["runs"]["plain"], summary["runs"]["regularized"]
    summary["comparison"] = _compare(p, r)
    summary.update(
        config={k: _rel(v) if k in ("db", "out") else v for k, v in vars(args).items()},
        K=args.order, lam=args.lam, reg_mode=args.reg_mode, regime=args.regime,
        n_train_rows=len(data.train), n_val_clusters=len(data.val), n_test_clusters=len(test),
        val_parents=list(data.val_parents),
        test_clusters=[t.cluster for t in test], seconds_total=time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    _plots(out, runs, summary, args.order)
    print(json.dumps(summary["comparison"], indent=1))
    print(f"wrote {out}/summary.json and figures in {summary['seconds_total']:.0f} s")
    return summary


def select_regime(records: list, regime: str, db: str) -> list:
    """The records of density ``regime`` (all of them for ``both``); an error naming the
    dataset's regimes when there are none."""
    if regime == "both":
        return records
    out = [r for r in records if r.regime == regime]
    if not any(r.split == "train" for r in out):
        have = sorted({r.regime or "''" for r in records})
        raise ValueError(f"--regime {regime}: {db} has no training clusters of that regime "
                         f"(its regimes: {', '.join(have)}); pass --regime both or one of those")
    return out


def _rel(path: str) -> str:
    """``path`` relative to the repository when inside it (portable summaries)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _compare(p: dict, r: dict) -> dict:
    """Regularized vs plain: accuracy cost (meV/atom) and high-order (k > K) content."""
    c = {f"accuracy_cost_{w}_mae_mev_per_atom": r[f"{w}_mae_mev_per_atom"]
         - p[f"{w}_mae_mev_per_atom"] for w in ("val", "test")
         if p[f"{w}_mae_mev_per_atom"] is not None and r[f"{w}_mae_mev_per_atom"] is not None}
    if p["val_mae_mev_per_atom"] and r["val_mae_mev_per_atom"] is not None:
        c["val_mae_ratio_regularized_to_plain"] = (r["val_mae_mev_per_atom"]
                                                   / p["val_mae_mev_per_atom"])
    for where in ("test", "val"):
        if not (p.get(where) and r.get(where)):
            continue
        hp, hr = p[where]["high_order"], r[where]["high_order"]
        for key in hp:
            c[f"{where}_high_order_{key}"] = {"plain": hp[key], "regularized": hr[key],
                                              "ratio": hr[key] / max(hp[key], 1e-300)}
        for regime, sp in p[where]["by_regime"].items():
            a = sp["high_order"]["sum_abs_mev_per_atom"]
            b = r[where]["by_regime"][regime]["high_order"]["sum_abs_mev_per_atom"]
            c[f"{where}_{regime}_high_order_sum_abs_mev_per_atom"] = {
                "plain": a, "regularized": b, "ratio": b / max(a, 1e-300)}
    if "test_high_order_sum_abs_mev_per_atom" in c:
        d = c["test_high_order_sum_abs_mev_per_atom"]
        c["regularized_has_smaller_high_order_on_test"] = d["regularized"] < d["plain"]
    return c


def _plots(out: Path, runs: dict, summary: dict, order: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"plain": "C0", "regularized": "C3", "reference": "k"}
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for name, res in runs.items():
        ep = [h["step"] for h in res.history]
        ax[0].semilogy(ep, [h["train_loss"] for h in res.history], color=colors[name],
                       label=f"{name} (total)")
        rc = res.config.regularizer
        if rc.lam > 0:
            ax[0].semilogy(ep, [h["train_loss"] - rc.lam * rc.every * h["reg"]
                                for h in res.history], ":", color=colors[name],
                           label=f"{name} (energy part)")
            ax[0].semilogy(ep, [max(h["reg"], 1e-300) for h in res.history], "--",
                           color=colors[name], label=f"{name} penalty P (λ={rc.lam:g})")
        ax[1].semilogy(ep, [h["val_mae"] for h in res.history], color=colors[name], label=name)
        if res.history:
            best = int(np.argmin([h["val_mae"] for h in res.history]))
            ax[1].plot(ep[best], res.history[best]["val_mae"], "o", color=colors[name])
        ax[1].axvline(len(res.steps), color=colors[name], ls=":", lw=0.8)
    ax[0].set(xlabel="step", ylabel="training loss since last validation (units of s²)",
              title="training loss")
    ax[1].set(xlabel="step", ylabel="validation MAE (meV/atom)",
              title="validation error (dot: best; dotted: stop)")
    for a in ax:
        a.legend()
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("val", "validation parents (reference MBE known)"),
              ("test", "held-out clusters"))
    for a, (where, title) in zip(ax, panels):
        series = [(n, summary["runs"][n].get(where)) for n in ("plain", "regularized")]
        if where == "val" and "reference" in summary:
            series.insert(0, ("reference", summary["reference"]["val"]))
        for name, s in series:
            if not s:
                continue
            y = np.maximum(s["spectrum"]["mean_abs_mev_per_atom"], 1e-6)
            a.semilogy(np.arange(1, len(y) + 1), y, "o-", color=colors[name], label=name)
        a.axvline(order + 0.5, color="gray", ls=":", label=f"K = {order}")
        a.set(xlabel="body order k", ylabel="mean |E^(k)| / n (meV/atom)", title=title)
        a.legend()
    fig.tight_layout()
    fig.savefig(out / "body_order_spectrum.png", dpi=120)
    plt.close(fig)


README_BLOCK = "main-job-table"  # the README block written by --readme


def readme_table(summary: dict) -> str:
    """The README's table of a main-job ``summary`` (markdown; numbers as committed)."""
    regime = summary.get("regime", "both")
    where = "both regimes" if regime == "both" else f"{regime} density"
    rows = [f"| run ({where}) | val MAE (meV/atom) | held-out MAE (meV/atom) | val force MAE "
            "(meV/Å) | held-out truncation error mean abs(E − E_MBE(K))/n (meV/atom) | "
            "held-out Σ_{k>K} mean abs E^(k)/n (meV/atom) | training | stop |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in summary["runs"].items():
        label = name if not r["lambda"] else f"{name} (λ = {r['lambda']:g}, K = {summary['K']})"
        high = r["test"]["high_order"] if r.get("test") else {}
        rows.append(f"| {label} | {r['val_mae_mev_per_atom']:.1f} | "
                    f"{r['test_mae_mev_per_atom']:.1f} | "
                    f"{r['val_force_mae_mev_per_angstrom']:.0f} | "
                    f"{high.get('truncation_mev_per_atom', float('nan')):.0f} | "
                    f"{high.get('sum_abs_mev_per_atom', float('nan')):.0f} | "
                    f"{r['steps']} steps, {r['train_seconds']:.0f} s | {r['stop_reason']} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    from jbo.data.store import StoreError

    args = parse_args(argv)
    if args.readme:  # rewrite the README's table from the committed summary, no training
        write_readme_block(README_BLOCK, readme_table(
            json.loads((Path(args.out) / "summary.json").read_text())))
        return 0
    try:
        summary = run(args)
    except (ValueError, StoreError, OSError) as exc:  # bad input: one line, exit code 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quick and Path(args.out).resolve() == DEFAULT_OUT.resolve():
        write_readme_block(README_BLOCK, readme_table(summary))  # the committed run's table
        print("rewrote README.md's main-job table")
    return 0


if __name__ == "__main__":
    from jbo import compilation_cache

    compilation_cache.enable()  # a second run loads its programs from disk
    sys.exit(main())
