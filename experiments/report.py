"""Collect the studies' JSON into ``results/REPORT.md`` through the hand-written template
``experiments/report_template.md`` (:mod:`experiments.report_render`): the code computes the
tables and numbers from the JSON, the template holds the prose.

``python -m experiments.report [--results DIR] [--out DIR]``; ``--quick`` only changes the
title (the report is cheap). Missing studies are listed, not fatal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from experiments import common, report_converged, report_genuine
from experiments.common import markdown_table as _table
from experiments.report_render import render

STUDIES = ("reference_mbe", "body_order_trends", "learning_curves", "generalization")


def _f(x: float, d: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if abs(x) >= 1e4 or (0 < abs(x) < 10 ** -d):
        return f"{x:.2e}"
    return f"{x:.{d}f}"


def _figs(name: str, res: dict, rel: str) -> str:
    return "\n\n".join(f"![{f}]({rel}/{name}/{f})" for f in res.get("figures", []))


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
Values = dict[str, str]


def reference_section(r: dict, rel: str) -> Values:
    st, lim = r["stored"], r["atomic_limit"]
    rows = []
    for reg, by_n in st["regimes"].items():
        for n, v in sorted(by_n.items(), key=lambda kv: int(kv[0])):
            mo, te = v["mean_abs_order"], v["mean_trunc_error"]
            rows.append([reg, n, v["count"], *[_f(x) for x in (mo + [None] * 4)[1:5]],
                         _f(te[1] if len(te) > 2 else None), _f(te[2] if len(te) > 3 else None)])
    table = _table(["regime", "n", "clusters", "mean abs E⁽²⁾/n", "mean abs E⁽³⁾/n",
                    "mean abs E⁽⁴⁾/n", "mean abs E⁽⁵⁾/n", "mean abs (E−E_MBE(2))/n",
                    "mean abs (E−E_MBE(3))/n"], rows)
    big = {reg: (n, by_n[n]["mean_abs_order"]) for reg, by_n in st["regimes"].items() if by_n
           for n in [max(by_n, key=int)]}
    k = max((len(mo) for _, mo in big.values()), default=1)
    spec = _table(["regime", "n", *[f"|E^({j})|/n" for j in range(2, k + 1)]],
                  [[reg, n, *[_f(x) for x in mo[1:]]] for reg, (n, mo) in big.items()])
    spin = _table(["regime", "spin ground state above the lowest multiplicity (%)"],
                  [[reg, f"{100 * sp['fraction_not_lowest']:.1f}"]
                   for reg, sp in st.get("spin", {}).items()])
    rows = []
    for cid, res in lim["clusters"].items():
        for m, rows_ in res.items():
            last = rows_[-1]
            hi = max(abs(x) for x in last["per_order"][1:]) * 1e3
            rows.append([cid, f"×{lim['stretches'][-1]:g}", m, _f(last["binding"] * 1e3),
                         _f(hi), _f(rows_[0]["binding"] * 1e3)])
    atomic = _table(["cluster", "stretch", "method", "E(A∪B)−E(A)−E(B)", "max |E^(k≥2)|",
                     "E(A∪B)−E(A)−E(B) unstretched"], rows)
    return dict(table=table, max_sum_error=f"{st['max_sum_error_eV']:.1e}",
                n_clusters=str(st["n_clusters"]), spectrum_table=spec, spin_table=spin,
                atomic_table=atomic, figures=_figs("reference_mbe", r, rel))


def trends_section(r: dict, rel: str, folder: str = "body_order_trends") -> Values:
    summ = common.seed_means(r["summary"], ("model", "makeup"),
                             ("total_mae", "order_mae", "high_order_weight"))
    rows = [[s["model"], s["makeup"], s["n_seeds"], s["n_train_rows"],
             _pm(s["total_mae"], s["total_mae_sd"]), *[_f(x) for x in s["order_mae"][:4]],
             _pm(s["high_order_weight"], s["high_order_weight_sd"], 2)] for s in summ]
    table = _table(["model", "makeup", "seeds", "train rows", "MAE E", "MAE E⁽¹⁾",
                    "MAE E⁽²⁾", "MAE E⁽³⁾", "MAE E⁽⁴⁾", "w_>2"], rows)
    ref_w = r["summary"][0]["ref_high_order_weight"] if r["summary"] else float("nan")
    caption = (f"MAE in meV/atom over {len(r['test_clusters'])} held-out test clusters "
               f"(H_4..H_8 parents never trained on), mean ± standard deviation over seeds "
               f"(per-order columns: means). w_>2 = Σ_(k>2)|E^(k)| / Σ_(k≥2)|E^(k)| of the "
               f"model's own decomposition (reference: {_f(ref_w, 2)}). Figures: first seed.")
    med = [[_f(np.nanmedian([s["total_mae"] for s in summ])),
            _f(np.nanmedian([np.nanmean(s["order_mae"][1:4]) for s in summ]))]] if summ else []
    best = []
    for m in dict.fromkeys(s["model"] for s in summ):
        b = min((s for s in summ if s["model"] == m), key=lambda s: s["total_mae"])
        best.append([m, f"`{b['makeup']}`", _f(b["total_mae"])])
    return dict(table=table, caption=caption,
                median_table=_table(["median MAE E", "median of the mean E⁽²⁾..E⁽⁴⁾ MAE"], med),
                best_table=_table(["model", "lowest-MAE makeup", "MAE E"], best),
                figures=_figs(folder, r, rel))


def learning_section(r: dict, rel: str) -> Values:
    from experiments.learning_curves import seed_means

    pts = seed_means(r["rows"])
    rows = [[x["model"], x["makeup"], x["n_seeds"], x["n_train_parents"],
             f"{x['n_train_rows']:.0f}", _pm(x["total_mae"], x["total_mae_sd"]),
             *[_f(v) for v in x["order_mae"]]] for x in pts]
    table = _table(["model", "makeup", "seeds", "parents", "structures", "MAE E",
                    "MAE E⁽¹⁾", "MAE E⁽²⁾", "MAE E⁽³⁾", "MAE E⁽⁴⁾"], rows)
    slopes = []
    for m, mk in dict.fromkeys((x["model"], x["makeup"]) for x in pts):
        xs = sorted((x for x in pts if (x["model"], x["makeup"]) == (m, mk)),
                    key=lambda x: x["n_train_rows"])
        if len(xs) >= 2 and xs[0]["total_mae"] > 0 and xs[-1]["total_mae"] > 0:
            slope = math.log(xs[-1]["total_mae"] / xs[0]["total_mae"]) / \
                math.log(xs[-1]["n_train_rows"] / xs[0]["n_train_rows"])
            slopes.append([m, mk, f"{xs[0]['n_train_rows']:.0f}", f"{xs[-1]['n_train_rows']:.0f}",
                           _f(xs[0]["total_mae"]), _f(xs[-1]["total_mae"]), f"{slope:.2f}"])
    return dict(table=table, n_test=str(r.get("n_test", "?")), figures=_figs(
        "learning_curves", r, rel), slope_table=_table(
        ["model", "makeup", "structures (first)", "structures (last)", "MAE E (first)",
         "MAE E (last)", "log-log slope"], slopes))


def generalization_section(r: dict, rel: str) -> Values:
    from experiments.generalization import seed_means

    ms = seed_means(r["rows"])
    rows = [[x["model"], _f(x["lam"], 2), x["train_regime"], x["n_seeds"],
             _pm(x["test_mae"], x["test_mae_sd"]), _pm(x["heldout_mae"], x["heldout_mae_sd"]),
             _f(x["other_regime_mae"]), _f(x["heldout_other_mae"]),
             _pm(x["high_order_weight"], x["high_order_weight_sd"], 2)] for x in ms]
    table = _table(["model", "λ", "trained on", "seeds", "test H4-8", "H9-12",
                    "other H4-8", "other H9-12", "w_>K"], rows)
    sp = []
    for reg in dict.fromkeys(x["train_regime"] for x in ms):
        ok = [x for x in ms if x["train_regime"] == reg and
              np.isfinite(x["heldout_mae"]) and np.isfinite(x["high_order_weight"])]
        if len(ok) >= 3:
            rho = spearman([x["high_order_weight"] for x in ok], [x["heldout_mae"] for x in ok])
            sp.append([reg, len(ok), f"{rho:+.2f}", _f(ok[0]["ref_high_order_weight"], 2)])
    reg_rows = []
    for x in ms:
        base = [y for y in ms if x["lam"] and not y["lam"]
                and (y["model"], y["train_regime"]) == (x["model"], x["train_regime"])]
        if base:
            b = base[0]
            reg_rows.append([x["model"], x["train_regime"], f"{x['lam']:g}", x["reg_order"],
                             _f(b["high_order_weight"], 2), _f(x["high_order_weight"], 2),
                             _f(b["heldout_mae"]), _f(x["heldout_mae"]), _f(b["test_mae"]),
                             _f(x["test_mae"])])
    return dict(table=table, figures=_figs("generalization", r, rel), spearman_table=_table(
        ["trained on", "models", "Spearman(w_>K, H9-12 MAE)", "reference w_>K"], sp),
        regularizer_table=_table(
            ["model", "trained on", "λ", "K", "w_>K (λ=0)", "w_>K", "H9-12 (λ=0)", "H9-12",
             "test (λ=0)", "test"], reg_rows))


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


def build(results: Path, rel: str = ".", quick: bool = False, note: str = "",
          figure: tuple[Path, str] | None = None) -> str:
    """The report's text from the JSON under ``results`` (figure links relative to ``rel``)
    through ``experiments/report_template.md``. ``figure``: (folder, link) where the
    genuine-models figure is drawn (None: linked under ``rel``, not drawn)."""
    res = _load(results)
    q = " (quick CI run)" if quick else ""
    conv = report_converged.section(results, rel)  # issue 15's study first, when run
    gen = report_genuine.section(results, rel, figure)
    missing = [s for s in STUDIES if s not in res]
    secs: dict[str, Values | None] = {}
    for sec, name, fn in (("reference", "reference_mbe", reference_section),
                          ("trends", "body_order_trends", trends_section),
                          ("learning", "learning_curves", learning_section),
                          ("generalization", "generalization", generalization_section)):
        secs[sec] = fn(res[name], rel) if name in res else None
    bias = res.get("body_order_trends_bias")
    values = dict(
        head=dict(quick=q), **(conv or dict.fromkeys(report_converged.SECTIONS)), genuine=gen,
        earlier_heading={} if conv else None,
        earlier=dict(config_table=config_section(res), reference_data=dataset_line(res)),
        run_note=dict(note=note) if note else None, earlier_models={},
        missing=dict(studies=", ".join(missing)) if missing else None, **secs,
        trends_bias=trends_section(bias, rel, "body_order_trends_bias")
        if bias and "body_order_trends" in res else None,
        main_job=dict(rel=rel) if "generalization" in res and (
            results / "train_body_order_reg" / "summary.json").exists() else None)
    return render(values)


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
    figure = (results / "genuine", f"{rel}/genuine") if out == results else (
        out / "genuine", "./genuine")  # a run elsewhere draws nothing into results/
    text = build(results, rel, args.quick, note, figure)
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
