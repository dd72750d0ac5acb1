"""The converged study's section of ``results/REPORT.md``, rebuilt from
``results/converged/converged.json`` and the shipped models under ``results/converged/models``
(:mod:`experiments.converged`). Returns None when the study has not been run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from experiments.common import markdown_table as _table
from experiments.converged_summary import K_ERR

COMMANDS = """```bash
python -m experiments.converged     # resumable by cell; --regimes --models --makeups --seeds
python -m experiments.report
jbo decompose results/converged/models/KEY.jbo --json spectra.json   # any shipped model
```"""


def _f(x, d: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.2e}" if abs(x) >= 1e5 else f"{x:.{d}f}"


def _pm(x, sd, d: int = 1) -> str:
    return _f(x, d) if sd is None or not math.isfinite(sd) else f"{_f(x, d)} ± {_f(sd, d)}"


def _variant(r: dict) -> str:
    """A row's makeup with its training-set cap and regularizer, e.g. ``full, 200 structures``."""
    return r["makeup"] + (f", {r['n_train']} structures" if r["n_train"] else "") + (
        f", regularised λ={r['lam']:g}" if r["lam"] else "")


def accuracy_section(res: dict) -> str:
    """Table 1: per regime and model, the ``full`` makeup's test MAE and how training ended."""
    rows, lines = [], []
    for a in res["accuracy"]:
        for m, v in a["models"].items():
            name = f"{m} ({v['hypers']})" if v.get("hypers") else m
            rows.append([a["regime"], name, _pm(v["test_mae"], v["test_mae_sd"]), v["n_seeds"],
                         _f(v["best_val_mae"]), _f(v.get("train_mae")),
                         f"{v.get('force_weight', 1.0):g}", f"{v.get('ema_decay', 0.0):g}",
                         "/".join(v["stop_kinds"]), v["steps"],
                         f"{_f(v['train_seconds'], 0)} / {_f(v['max_seconds'], 0)}",
                         v["device"]])
        lines.append(f"* **{a['regime']}**: best {a['best_model']} at {_f(a['best_mae'])} "
                     f"meV/atom, target ≤ {_f(a['target'])}: "
                     + ("met." if a["meets_target"] else "**not met**."))
    for r in res.get("rows", []):  # models not rotation-invariant by construction (PET)
        rot = r.get("rotational_error")
        if rot:
            lines.append(f"* {r['model']} ({r['regime']}, {_variant(r)}, seed "
                         f"{r['seed']}, rotational augmentation "
                         f"{'on' if r['rotate'] else 'off'}): std of "
                         f"E/n over {rot['n_rotations']} random orientations of the test "
                         f"parents {_f(rot['mean_std_mev_per_atom'], 2)} meV/atom on average "
                         f"(max spread {_f(rot['max_spread_mev_per_atom'], 2)}), against a "
                         f"test MAE of {_f(r['test_mae'])}.")
    return "\n".join([_table(["regime", "model", "test MAE (meV/atom)", "seeds", "best val MAE",
                              "train MAE", "force w", "EMA", "stop", "steps",
                              "train s / budget", "device"], rows), "",
                      "Train MAE: the shipped model on the full clusters it trained on; close to "
                      "the validation MAE means under-fitting, far below it over-fitting. Force "
                      "w: the force-loss weight against the per-atom energy loss; EMA: the "
                      "parameter EMA decay (0: none).", "", *lines])


def settings_section(res: dict) -> str:
    """The settings one group was trained with, compared on validation (the kept one marked)."""
    rows = [[r["regime"], r["model"], _variant(r), r["hypers"], r["steps"],
             f"{r['force_weight']:g}", f"{r['ema_decay']:g}", r["device"], r["n_seeds"],
             _f(r["best_val_mae"]), _f(r["train_mae"]), _f(r["test_mae"]),
             "**kept**" if r["kept"] else ""] for r in res.get("settings_compared", [])]
    if not rows:
        return ""
    return ("Where a group was trained in more than one way, the way with the lowest seed-mean "
            "validation MAE is kept (the test MAE is shown, never used to choose):\n\n"
            + _table(["regime", "model", "makeup", "hypers", "steps", "force w", "EMA",
                      "device", "seeds", "val MAE", "train MAE", "test MAE", ""], rows))


README_BLOCK = "converged-table"  # the README block `python -m experiments.report` writes


def readme_summary(res: dict) -> str:
    """The README's summary of the converged study: the accuracy section and its grid."""
    n = len(res["cells"])
    return (f"{n} cells run so far (`results/converged/`, one seed unless the table says "
            f"otherwise; devices: {', '.join(res['devices'])}). Test MAE per regime, makeup "
            "`full`:\n\n" + accuracy_section(res))


def order_section(res: dict) -> str:
    """(b) per-order errors next to the total error, per regime, makeup and model."""
    head = ["regime", "makeup", "model", "total"] + [f"E^({k})" for k in range(1, K_ERR + 1)]
    rows = [[r["regime"], r["makeup"], r["model"], _f(r["test_mae"])]
            + [_f(x) for x in r["test_order_mae"]] for r in res["means"]
            if r["n_train"] is None and not r["lam"]]
    return _table(head, rows)


def effective_section(res: dict) -> str:
    """(c) effective body order per regime, model and makeup (reference in the last column)."""
    means = [r for r in res["means"] if r["n_train"] is None and not r["lam"]]
    makeups = list(dict.fromkeys(r["makeup"] for r in means))
    rows = []
    for g in dict.fromkeys(r["regime"] for r in means):
        ref = next(r["ref_effective_order"] for r in res["rows"] if r["regime"] == g)
        for m in dict.fromkeys(r["model"] for r in means if r["regime"] == g):
            by = {r["makeup"]: r["effective_order"] for r in means
                  if (r["regime"], r["model"]) == (g, m)}
            rows.append([g, m, *[_f(by.get(mk), 1) for mk in makeups], ref])
    return _table(["regime", "model", *makeups, "reference"], rows)


def generalization_section(res: dict) -> str:
    """(e) test, H_9/H_10 and other-regime errors, with and without the regularizer."""
    rows = [[r["regime"], r["model"], _f(r["lam"], 2), r["makeup"], _f(r["test_mae"]),
             _f(r["heldout_mae"]), _f(r["other_regime_mae"])]
            for r in res["means"] if r["n_train"] is None
            and (r["lam"] or r["makeup"] == res["config"]["makeups"][0])]
    return _table(["trained on", "model", "λ", "makeup", "test H_8", "H_9/H_10 (same regime)",
                   "other regime H_8"], rows)


def _median(xs) -> float:
    xs = sorted(x for x in xs if x is not None and math.isfinite(x))
    return float("nan") if not xs else (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def _how(row: dict) -> tuple:
    """How a cell was trained beyond its group: hyperparameters, EMA, force weight."""
    return row.get("hypers", ""), row.get("ema_decay", 0.0), row.get("force_weight", 1.0)


def reading(res: dict, earlier: dict | None) -> str:
    """What changed from the earlier, under-fitted study (``body_order_trends.json``: both
    regimes mixed, fixed steps, energies only) and which of its conclusions survive, computed
    from both JSON files; claims whose cells have not been run are left out."""
    means = [r for r in res["means"] if r["n_train"] is None]
    plain = [r for r in means if not r["lam"]]
    out = []
    if earlier:
        old = [r["total_mae"] for r in earlier["summary"] if r["makeup"] == "full"]
        new = "; ".join(f"{a['regime']} {_f(min(v['test_mae'] for v in a['models'].values()))}"
                        f"–{_f(max(v['test_mae'] for v in a['models'].values()))}"
                        for a in res["accuracy"] if a["models"])
        out.append(f"**Totals.** The earlier study ({earlier['config']['steps']} steps, energies "
                   f"only, both regimes mixed) reached {_f(min(old))}–{_f(max(old))} meV/atom "
                   f"with makeup `full`; trained per regime to convergence with forces the "
                   f"`full` models reach {new} meV/atom.")
    for g in dict.fromkeys(r["regime"] for r in plain):
        full = [r for r in plain if r["regime"] == g and r["makeup"] == "full"]
        tot = _median(r["test_mae"] for r in full)
        orders = _median(x for r in full for x in r["test_order_mae"][1:])
        if full and math.isfinite(orders):
            verdict = ("survives" if orders > 3 * tot else "does not survive")
            old = ""
            if earlier:
                o = [r for r in earlier["summary"] if r["makeup"] == "full"]
                old = (" (earlier, regimes mixed: "
                       f"{_f(_median(r['total_mae'] for r in o))} against "
                       f"{_f(_median(x for r in o for x in r['order_mae'][1:4]))})")
            out.append(f"**Good totals, wrong orders ({g}): {verdict}.** Median `full` total "
                       f"MAE {_f(tot)} meV/atom against a median E^(2..4) MAE of {_f(orders)}"
                       f"{old}.")
        acc = next((a for a in res["accuracy"] if a["regime"] == g), {"models": {}})
        fit = {m: v for m, v in acc["models"].items()
               if math.isfinite(v.get("train_mae", math.nan))}
        if fit:
            under = [m for m, v in fit.items() if v["train_mae"] > 0.8 * v["best_val_mae"]]
            out.append(f"**Fit ({g}, `full`; train / validation MAE):** "
                       + "; ".join(f"{m} {_f(v['train_mae'])} / {_f(v['best_val_mae'])}"
                                   for m, v in fit.items())
                       + f". {len(under)} of {len(fit)} have a train MAE above 0.8 × their "
                       "validation MAE (under-fitting: capacity, loss weights or optimisation "
                       "limit them, not the amount of data)"
                       + (f": {', '.join(under)}." if under else "."))
        by = {(r["model"], r["makeup"]): r for r in plain if r["regime"] == g}
        for mk, what in (("up_to:4+atoms", "subclusters up to 4 atoms and the isolated atom"),
                         ("up_to:2", "dimers")):
            pairs = [(m, by[m, "full"], by[m, mk]) for m, k in by if k == "full" and (m, mk) in by]
            moves = [f"{m} E^(2) {_f(a['test_order_mae'][1])} → {_f(b['test_order_mae'][1])}, "
                     f"total {_f(a['test_mae'])} → {_f(b['test_mae'])}"
                     + ("*" if _how(a) != _how(b) else "") for m, a, b in pairs]
            if moves:
                out.append(f"**Adding {what} ({g}, `full` → `{mk}`, MAE in meV/atom):** "
                           + "; ".join(moves) + "." + (
                               " *The two cells were trained otherwise (hyperparameters, EMA "
                               "or force weight: see the settings table)." if "*" in
                               "".join(moves) else ""))
    for r in (r for r in means if r["lam"]):
        base = next((p for p in plain if (p["model"], p["makeup"], p["regime"])
                     == (r["model"], r["makeup"], r["regime"])), None)
        if base:
            out.append(f"**Regulariser ({r['model']} ← {r['regime']}, λ={r['lam']:g}):** test "
                       f"{_f(base['test_mae'])} → {_f(r['test_mae'])}, H_9/H_10 "
                       f"{_f(base['heldout_mae'])} → {_f(r['heldout_mae'])}, other regime "
                       f"{_f(base['other_regime_mae'])} → {_f(r['other_regime_mae'])} meV/atom; "
                       f"effective order {_f(base['effective_order'])} → "
                       f"{_f(r['effective_order'])}.")
    return "\n\n".join(out) if out else "No cells yet."


def models_line(folder: Path, res: dict) -> str:
    """What is shipped: files present, total size, bytes per architecture."""
    files = [folder / "models" / f"{k}.jbo" for k in res["cells"]]
    present = [f for f in files if f.exists()]
    total = sum(f.stat().st_size for f in present)
    per = ", ".join(f"{m} {b / 1e3:.0f} kB" for m, b in res["bytes_per_model"].items())
    return (f"Shipped models: {len(present)} of {len(files)} cells' files under "
            f"`converged/models/` ({total / 1e6:.2f} MB; per model: {per}). Each reloads with "
            "`jbo.models.load` and decomposes with `jbo decompose`; the stored per-order "
            "energies of three test parents per cell are checked against the files "
            "(`tests/test_converged.py`).")


def section(results: Path, rel: str = ".") -> str | None:
    """The converged study's section, or None when ``results/converged`` has no JSON."""
    folder = results / "converged"
    p = folder / "converged.json"
    if not p.exists():
        return None
    res = json.loads(p.read_text())
    old = results / "body_order_trends" / "body_order_trends.json"
    earlier = json.loads(old.read_text()) if old.exists() else None
    cfg = res["config"]
    figs = {f: f"![{f}]({rel}/converged/{f})" for f in res.get("figures", [])}
    pick = lambda prefix: "\n\n".join(v for k, v in figs.items() if k.startswith(prefix))  # noqa
    data = res["data"]
    counts = "; ".join(f"{g}: {v['train_parents']} training parents ({v['pool']} pool + "
                       f"{v['complete'] - v['test_parents']} complete), {v['test_parents']} "
                       "test parents" for g, v in data.items() if g != "heldout")
    parts = [
        "## Converged study: per regime, energies + forces, models shipped"
        + (" (quick CI run)" if res.get("quick") else ""), "", COMMANDS, "",
        f"Data (`{Path(res['db']).name}`): {counts}; {len(data['heldout'])} complete "
        "H_9/H_10 parents held out. Each cell validates on "
        f"{_f(100 * cfg['val_fraction'], 0)}% of its training parents, trains with forces "
        f"on a cosine schedule (batch {cfg['batch_size']}; its length, force-loss weight and "
        "wall-time budget per cell in the table), stops when the validation "
        f"MAE has not improved by 0.5% in {cfg['patience']} validations (by default; one every "
        f"{cfg['eval_every']} steps), or at its wall-time budget. Stop kinds: converged "
        "(patience), schedule (cosine ran out), budget (time). "
        f"{len(res['cells'])} cells, {_f(res['cell_seconds'] / 3600, 2)} h of cell compute "
        f"here; training on {', '.join(res['devices'])}."
        + (f" {len(res['superseded'])} cells of a setting trained again otherwise (a longer "
           "schedule, EMA, another force weight, a GPU) are superseded by the setting with the "
           "lower seed-mean validation MAE."
           if res.get("superseded") else ""), "",
        "### Accuracy per regime (makeup `full`, test parents never trained on)", "",
        accuracy_section(res), "", settings_section(res), "", pick("validation_curves"), "",
        models_line(folder, res), "",
        "### (a) Body-order spectra |E^(k)|/n, models vs reference", "", pick("spectra"), "",
        "### (b) Per-order errors vs the total error (MAE, meV/atom, test parents)", "",
        order_section(res), "", pick("order_vs_total"), "",
        f"### (c) Effective body order (smallest k with Σ_(j>k) mean|E^(j)|/n < "
        f"{res['threshold_mev_per_atom']:g} meV/atom); linear ACE (correlation 3) is bounded "
        "at 4 exactly", "", effective_section(res), "", pick("effective_order"), "",
        "### (d) Learning curves", "",
        pick("learning_curves") or "Not in this run (`--sizes`, `--lc-models`).", "",
        "### (e) Generalisation to H_9/H_10 and to the other regime", "",
        generalization_section(res), "", pick("generalization"), "",
        "### (f) Atomic limit", "", "The atomic-limit analysis of the reference (spin "
        "choices) is unchanged: section 1 below (`python -m experiments.reference_mbe`).", "",
        "### Reading: what changed from the under-fitted run, what survives", "",
        reading(res, earlier)]
    return "\n".join(parts)
