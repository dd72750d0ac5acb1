"""Collect the studies' JSON into ``results/REPORT.md``: figures, tables, and a short reading
of each, with the numbers (generated from the JSON, so it never disagrees with them).

``python -m experiments.report [--results DIR] [--out DIR]``; ``--quick`` only changes the
title (the report is cheap). Missing studies are listed, not fatal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from experiments import common, report_converged
from experiments.common import markdown_table as _table

STUDIES = ("reference_mbe", "body_order_trends", "learning_curves", "generalization")
COMMANDS = """```bash
. .venv/bin/activate
git show 95b9f03:data/h_clusters.db > /tmp/h_clusters.db   # the data these cells were trained on
python -m experiments.reference_mbe
python -m experiments.body_order_trends --db /tmp/h_clusters.db
python -m experiments.body_order_trends --use-bias --models soap_bpnn,linear_ace \\
    --makeups up_to:4,up_to:4+atoms --seeds 0 --out results/body_order_trends_bias --db /tmp/h_clusters.db
python -m experiments.learning_curves --db /tmp/h_clusters.db   # reuses body_order_trends cells of the largest size
python -m experiments.generalization --db /tmp/h_clusters.db
python -m experiments.report               # writes results/REPORT.md
# every cell is cached under results/*/cells/: a rerun only trains what is missing (--redo);
# on other data (the shipped data/h_clusters.npz, the default --db) every cell is trained anew
# CI-sized versions: add --quick --out /tmp/x (pytest -m experiment runs them)
```"""


def _f(x: float, d: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if abs(x) >= 1e4 or (0 < abs(x) < 10 ** -d):
        return f"{x:.2e}"
    return f"{x:.{d}f}"


def _figs(name: str, res: dict, rel: str) -> str:
    return "\n\n".join(f"![{f}]({rel}/{name}/{f})" for f in res.get("figures", []))


BIAS_NOTE = ("The zoo models predict exactly their composition baseline c_H for an isolated "
             "atom (`use_bias=False`), so in section 2 every model's E^(1) is n·c_H: the "
             "least-squares baseline of its training rows without isolated atoms in the makeup, "
             "the isolated atom's own energy with them (`+atoms`). With `use_bias=True` the "
             "readout bias makes the one-body energy learnable for SOAP-BPNN, linear ACE and "
             "MACE (PET's isolated atom keeps its baseline by construction, whatever "
             "`use_bias`):")


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (no ties expected: continuous errors and weights)."""
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    return float(np.corrcoef(rank(np.asarray(a)), rank(np.asarray(b)))[0, 1])


def _pm(x: float, sd: float, d: int = 1) -> str:
    """``x ± sd`` with ``d`` decimals (``x`` alone when ``sd`` is nan: one seed)."""
    if not math.isfinite(sd):
        return _f(x, d)
    return _f(x, d) + " ± " + (_f(sd, d) if sd >= 10**-d else f"<{10**-d:g}")


def _load(results: Path) -> dict:
    out = {}
    p = results / "body_order_trends_bias" / "body_order_trends.json"
    if p.exists():
        out["body_order_trends_bias"] = json.loads(p.read_text())
    for s in STUDIES:
        p = results / s / f"{s}.json"
        if p.exists():
            out[s] = json.loads(p.read_text())
    return out


# ---------------------------------------------------------------- sections
def reference_section(r: dict, rel: str) -> str:
    st, lim = r["stored"], r["atomic_limit"]
    lines = ["## 1. The reference MBE (FCI/STO-3G)", ""]
    rows = []
    for reg, by_n in st["regimes"].items():
        for n, v in sorted(by_n.items(), key=lambda kv: int(kv[0])):
            mo, te = v["mean_abs_order"], v["mean_trunc_error"]
            rows.append([reg, n, v["count"], *[_f(x) for x in (mo + [None] * 4)[1:5]],
                         _f(te[1] if len(te) > 2 else None), _f(te[2] if len(te) > 3 else None)])
    lines.append(_table(["regime", "n", "clusters", "mean abs E⁽²⁾/n", "mean abs E⁽³⁾/n",
                         "mean abs E⁽⁴⁾/n",
                         "mean abs E⁽⁵⁾/n", "mean abs (E−E_MBE(2))/n",
                         "mean abs (E−E_MBE(3))/n"], rows))
    lines += ["", "Mean magnitudes in meV/atom over the stored H_4..H_8 parents (every subcluster "
              "labelled; the MBE is the Möbius inversion of the stored energies).", ""]
    read = [f"Σ_k E^(k) reproduces the stored total to {st['max_sum_error_eV']:.1e} eV over "
            f"{st['n_clusters']} clusters."]
    for reg, by_n in st["regimes"].items():
        if by_n:
            n = max(by_n, key=int)
            mo = by_n[n]["mean_abs_order"]
            read.append(f"In the **{reg}**-density regime (H{n}) |E^(k)|/n goes "
                        + " → ".join(_f(x) for x in mo[1:]) + " meV/atom for k = 2.."
                        + f"{len(mo)}" + (": the expansion converges fast." if mo[-1] < 0.05 *
                                          mo[1] else ": it does not converge quickly; high "
                                          "orders are as large as the pair terms."))
    for reg, sp in st.get("spin", {}).items():
        read.append(f"{reg}: {100 * sp['fraction_not_lowest']:.1f}% of the labelled structures "
                    "have a spin ground state above the lowest multiplicity.")
    for cid, res in lim["clusters"].items():
        parts, vanish, spurious = [], [], []
        for m, rows_ in res.items():
            last = rows_[-1]
            hi = max(abs(x) for x in last["per_order"][1:]) * 1e3
            (vanish if hi < 1e-3 else spurious).append(m)
            parts.append(f"{m}: E(A∪B)−E(A)−E(B) = {_f(last['binding'] * 1e3)} meV, "
                         f"max |E^(k≥2)| = {_f(hi)} meV")
        read.append(f"Atomic limit ({cid} stretched ×{lim['stretches'][-1]:g}): "
                    + "; ".join(parts) + f". The interaction terms vanish for "
                    f"{', '.join(vanish) or 'no method'}; {', '.join(spurious) or 'none'} "
                    "leaves spurious terms of every order, which a model trained on such labels "
                    "would have to learn (on the log plots, values below 10⁻⁶ meV — zero to "
                    "round-off — are not drawn).")
        first = {m: rows_[0] for m, rows_ in res.items()}
        (g, gm), (l, lm) = list(first.items())[:2]
        if abs(gm["binding"] - lm["binding"]) > 1e-3:
            read.append(f"At the unstretched geometry the spin choice matters even in FCI: "
                        f"E(A∪B)−E(A)−E(B) is {_f(gm['binding'] * 1e3)} meV with {g} and "
                        f"{_f(lm['binding'] * 1e3)} meV with {l}.")
    lines += ["**Reading.** " + " ".join(read), "", _figs("reference_mbe", r, rel)]
    return "\n".join(lines)


def trends_section(r: dict, rel: str, folder: str = "body_order_trends",
                   title: str = "## 2. Body-order trends of the models") -> str:
    lines = [title, ""]
    summ = common.seed_means(r["summary"], ("model", "makeup"),
                      ("total_mae", "order_mae", "high_order_weight"))
    rows = [[s["model"], s["makeup"], s["n_seeds"], s["n_train_rows"],
             _pm(s["total_mae"], s["total_mae_sd"]), *[_f(x) for x in s["order_mae"][:4]],
             _pm(s["high_order_weight"], s["high_order_weight_sd"], 2)] for s in summ]
    lines.append(_table(["model", "makeup", "seeds", "train rows", "MAE E", "MAE E⁽¹⁾",
                         "MAE E⁽²⁾", "MAE E⁽³⁾", "MAE E⁽⁴⁾", "w_>2"], rows))
    ref_w = r["summary"][0]["ref_high_order_weight"] if r["summary"] else float("nan")
    lines += ["", f"MAE in meV/atom over {len(r['test_clusters'])} held-out test clusters "
              f"(H_4..H_8 parents never trained on), mean ± standard deviation over seeds "
              f"(per-order columns: means). w_>2 = Σ_(k>2)|E^(k)| / Σ_(k≥2)|E^(k)| of the "
              f"model's own decomposition (reference: {_f(ref_w, 2)}). Figures: first seed.", ""]
    read = []
    if summ:
        tot = np.nanmedian([s["total_mae"] for s in summ])
        per = np.nanmedian([np.nanmean(s["order_mae"][1:4]) for s in summ])
        read.append(f"Median total-energy MAE {_f(tot)} meV/atom against a median E^(2..4) MAE "
                    f"of {_f(per)} meV/atom" + (
                        ": the models reach their totals through body orders that differ from "
                        "the reference's and largely cancel." if per > 3 * tot else "."))
    for m in dict.fromkeys(s["model"] for s in summ):
        ss = {s["makeup"]: s for s in summ if s["model"] == m}
        best = min(ss.values(), key=lambda s: s["total_mae"])
        ws = ", ".join(f"{k} {_f(s['high_order_weight'], 2)}" for k, s in ss.items())
        txt = (f"**{m}**: lowest total error with `{best['makeup']}` "
               f"({_f(best['total_mae'])} meV/atom); w_>2 by makeup: {ws}")
        if "full" in ss and "up_to:2" in ss:
            txt += (f"; adding dimers moves the E^(2) MAE {_f(ss['full']['order_mae'][1])} → "
                    f"{_f(ss['up_to:2']['order_mae'][1])}")
        if "up_to:4" in ss and "up_to:4+atoms" in ss:
            a, b = ss["up_to:4"], ss["up_to:4+atoms"]
            txt += (f"; adding isolated atoms moves the MAE of E^(1) {_f(a['order_mae'][0])} → "
                    f"{_f(b['order_mae'][0])}, of E^(2) {_f(a['order_mae'][1])} → "
                    f"{_f(b['order_mae'][1])} and of E {_f(a['total_mae'])} → "
                    f"{_f(b['total_mae'])}")
        read.append(txt + ".")
    lines += ["**Reading.** " + " ".join(read), "", _figs(folder, r, rel)]
    return "\n".join(lines)


def learning_section(r: dict, rel: str) -> str:
    from experiments.learning_curves import seed_means

    lines = ["## 3. Learning curves", ""]
    pts = seed_means(r["rows"])
    rows = [[x["model"], x["makeup"], x["n_seeds"], x["n_train_parents"],
             f"{x['n_train_rows']:.0f}", _pm(x["total_mae"], x["total_mae_sd"]),
             *[_f(v) for v in x["order_mae"]]] for x in pts]
    lines.append(_table(["model", "makeup", "seeds", "parents", "structures", "MAE E",
                         "MAE E⁽¹⁾", "MAE E⁽²⁾", "MAE E⁽³⁾", "MAE E⁽⁴⁾"], rows))
    read = []
    for m, mk in dict.fromkeys((x["model"], x["makeup"]) for x in pts):
        xs = sorted((x for x in pts if (x["model"], x["makeup"]) == (m, mk)),
                    key=lambda x: x["n_train_rows"])
        if len(xs) >= 2 and xs[0]["total_mae"] > 0 and xs[-1]["total_mae"] > 0:
            slope = math.log(xs[-1]["total_mae"] / xs[0]["total_mae"]) / \
                math.log(xs[-1]["n_train_rows"] / xs[0]["n_train_rows"])
            read.append(f"{m}/{mk}: {_f(xs[0]['total_mae'])} → {_f(xs[-1]['total_mae'])} "
                        f"meV/atom from {xs[0]['n_train_rows']:.0f} to "
                        f"{xs[-1]['n_train_rows']:.0f} structures (log-log slope {slope:.2f})")
    lines += ["", f"MAE in meV/atom on {r.get('n_test', '?')} held-out test clusters, mean ± "
              "standard deviation over seeds (each seed draws its own training parents).", "",
              "**Reading.** " + "; ".join(read) + ".", "", _figs("learning_curves", r, rel)]
    return "\n".join(lines)


def generalization_section(r: dict, rel: str) -> str:
    from experiments.generalization import seed_means

    lines = ["## 4. Generalization to larger clusters and the other regime", ""]
    ms = seed_means(r["rows"])
    rows = [[x["model"], _f(x["lam"], 2), x["train_regime"], x["n_seeds"],
             _pm(x["test_mae"], x["test_mae_sd"]), _pm(x["heldout_mae"], x["heldout_mae_sd"]),
             _f(x["other_regime_mae"]), _f(x["heldout_other_mae"]),
             _pm(x["high_order_weight"], x["high_order_weight_sd"], 2)] for x in ms]
    lines.append(_table(["model", "λ", "trained on", "seeds", "test H4-8", "H9-12",
                         "other H4-8", "other H9-12", "w_>K"], rows))
    read = []
    for reg in dict.fromkeys(x["train_regime"] for x in ms):
        ok = [x for x in ms if x["train_regime"] == reg and
              np.isfinite(x["heldout_mae"]) and np.isfinite(x["high_order_weight"])]
        if len(ok) >= 3:
            rho = spearman([x["high_order_weight"] for x in ok], [x["heldout_mae"] for x in ok])
            read.append(f"Trained on **{reg}** density ({len(ok)} models): the Spearman "
                        "correlation between the high-order weight w_>K and the H_9..H_12 "
                        f"error is {rho:+.2f}; the reference's own w_>K on the same test "
                        f"clusters is {_f(ok[0]['ref_high_order_weight'], 2)}.")
    for x in ms:
        base = [y for y in ms if x["lam"] and not y["lam"]
                and (y["model"], y["train_regime"]) == (x["model"], x["train_regime"])]
        if base:
            b = base[0]
            read.append(f"{x['model']} ← {x['train_regime']}: the regularizer "
                        f"(λ={x['lam']:g}, K={x['reg_order']}) moves w_>K "
                        f"{_f(b['high_order_weight'], 2)} → {_f(x['high_order_weight'], 2)} "
                        f"and the H_9..H_12 error {_f(b['heldout_mae'])} → "
                        f"{_f(x['heldout_mae'])} meV/atom (test {_f(b['test_mae'])} → "
                        f"{_f(x['test_mae'])}).")
    lines += ["", "MAE in meV/atom, mean ± standard deviation over seeds; \"other\": the "
              "density regime not trained on. λ = 0: unregularized.", "",
              "**Reading.** " + " ".join(read), "", _figs("generalization", r, rel)]
    return "\n".join(lines)


def config_section(res: dict) -> str:
    rows = []
    for name, r in res.items():
        cfg = r.get("config", {})
        rows.append([name, ",".join(cfg.get("models", []) or []) or "–",
                     ",".join(cfg.get("makeups", []) or []) or "–",
                     cfg.get("steps", "–"), ",".join(map(str, cfg.get("seeds", []) or [])) or "–",
                     len(r.get("cells", [])),
                     f"{r.get('cell_seconds', r.get('seconds', 0)) / 60:.1f}"])
    return _table(["study", "models", "makeups", "steps/cell", "seeds", "cells",
                   "compute (min)"], rows)


def shown_path(db: str) -> str:
    """A dataset path as the report shows it: relative to the checkout that ran the study (a
    study run in another checkout or worktree of this repository shows the same text)."""
    p = Path(db)
    if p.is_relative_to(common.ROOT):
        return str(p.relative_to(common.ROOT))
    if p.is_absolute() and p.parent.name == "data" and (common.ROOT / "data").is_dir():
        return f"data/{p.name}"
    return db


def dataset_line(res: dict) -> str:
    """Which reference data the studies saw (from their JSON)."""
    parts = []
    if "reference_mbe" in res:
        r = res["reference_mbe"]
        counts = {reg: ", ".join(f"H{n}: {v['count']}" for n, v in by_n.items())
                  for reg, by_n in r["stored"]["regimes"].items() if by_n}
        parts.append(f"`{shown_path(r['db'])}`, complete H_4..H_8 parents per regime: "
                     + "; ".join(f"{k} ({v})" for k, v in counts.items()))
    if "generalization" in res and res["generalization"]["rows"]:
        ns = sorted({n for x in res["generalization"]["rows"] for n in x["heldout_n"]})
        parts.append("held-out larger clusters: " + ", ".join(f"H{n}" for n in ns))
    return "Reference data: " + "; ".join(parts) + "." if parts else ""


def read_note(results: Path) -> str:
    """``results/RUN_NOTE.md``: how the committed run was made and what it found (hand-written;
    placed under "What was run")."""
    p = results / "RUN_NOTE.md"
    return p.read_text().strip() if p.exists() else ""


def build(results: Path, rel: str = ".", quick: bool = False, note: str = "") -> str:
    res = _load(results)
    parts = ["# Body order of ML interatomic potentials on hydrogen clusters"
             + (" (quick CI run)" if quick else ""), "",
             "Reproduces and extends Chong et al., arXiv:2509.14146 with jbo. Energies per atom "
             "in meV/atom unless stated. Generated by `python -m experiments.report` from the "
             "JSON under `results/`."]
    converged = report_converged.section(results, rel)  # issue 15's study first, when run
    if converged:
        parts += ["", converged, "", "## The earlier, under-fitted studies (fixed steps, "
                  "energies only; kept until the converged study covers them)"]
    parts += ["", "Regenerate:", "", COMMANDS, "",
             "### What was run", "", config_section(res), "",
             "Compute: training + decomposition time of a study's cells on one CPU core each "
             "(learning_curves reuses the full-size body_order_trends cells; they count in both).",
             "", dataset_line(res),
             *(["", note] if note else []), "",
             "Models are small variants of the zoo models (hyperparameters in "
             "`jbo/study/cell.py`, `STUDY_HYPERS`), trained on energies only with Adam and "
             "a cosine schedule for a fixed number of steps; one training cell per (model, "
             "makeup, size, seed). These are CPU-sized runs: the absolute errors are far from "
             "converged models', the comparisons between models and makeups are the point."]
    missing = [s for s in STUDIES if s not in res]
    if missing:
        parts += ["", f"Not run yet: {', '.join(missing)}."]
    for name, fn in (("reference_mbe", reference_section), ("body_order_trends", trends_section),
                     ("learning_curves", learning_section),
                     ("generalization", generalization_section)):
        if name in res:
            parts += ["", fn(res[name], rel)]
        main_job = results / "train_body_order_reg" / "summary.json"
        if name == "generalization" and main_job.exists():
            parts += ["", "The main body-order-regularized training job "
                      f"(`python -m experiments.train_body_order_reg`) reports its own runs in `{rel}/train_body_order_reg/summary.json` "
                      "and figures next to it."]
        if name == "body_order_trends" and "body_order_trends_bias" in res:
            parts += ["", BIAS_NOTE, "", trends_section(
                res["body_order_trends_bias"], rel, "body_order_trends_bias",
                "### 2b. The same with a learnable isolated-atom energy (`--use-bias`)")]
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    p = common.parser("report", __doc__)
    p.add_argument("--results", default=None, help="folder holding the studies' folders")
    p.add_argument("--note", default="", help="a paragraph added under 'What was run' (after "
                   "RESULTS/RUN_NOTE.md, if that exists)")
    args = p.parse_args(argv)
    results = Path(args.results) if args.results else common.ROOT / "results"
    out = common.out_dir(args, "report") if args.out or args.quick else results
    out.mkdir(parents=True, exist_ok=True)
    rel = Path(__import__("os").path.relpath(results, out)).as_posix()
    note = "\n\n".join(t for t in (read_note(results), args.note) if t)
    text = build(results, rel, args.quick, note)
    (out / "REPORT.md").write_text(text)
    conv = results / "converged" / "converged.json"
    if results == common.ROOT / "results" and conv.exists() and not args.quick:
        common.write_readme_block(report_converged.README_BLOCK, report_converged.readme_summary(
            json.loads(conv.read_text())))  # the README quotes the committed study
    print(f"report: {out / 'REPORT.md'} ({len(text.splitlines())} lines)")
    return text


if __name__ == "__main__":
    from jbo import compilation_cache

    compilation_cache.enable()  # a second run loads its programs from disk
    main()
