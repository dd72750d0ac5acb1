"""The converged study's section of ``results/REPORT.md``, rebuilt from
``results/converged/converged.json`` and the shipped models under ``results/converged/models``
(:mod:`experiments.converged`) as template values (prose: ``experiments/report_template.md``).
The section is left out when the study has not been run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from experiments.common import markdown_table as _table
from experiments.converged_summary import K_ERR


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
    rows = []
    for a in res["accuracy"]:
        for m, v in a["models"].items():
            name = f"{m} ({v['hypers']})" if v.get("hypers") else m
            rows.append([a["regime"], name, _pm(v["test_mae"], v["test_mae_sd"]), v["n_seeds"],
                         _f(v["best_val_mae"]), _f(v.get("train_mae")),
                         f"{v.get('force_weight', 1.0):g}", f"{v.get('ema_decay', 0.0):g}",
                         "/".join(v["stop_kinds"]), v["steps"],
                         f"{_f(v['train_seconds'], 0)} / {_f(v['max_seconds'], 0)}",
                         v["device"]])
    return _table(["regime", "model", "test MAE (meV/atom)", "seeds", "best val MAE",
                   "train MAE", "force w", "EMA", "stop", "steps", "train s / budget",
                   "device"], rows)


def target_table(res: dict) -> str:
    """Per regime: the lowest test MAE, its model, the target and whether it is met."""
    return _table(["regime", "lowest test MAE", "model", "target (≤)", "met"], [
        [a["regime"], _f(a["best_mae"]), a["best_model"], _f(a["target"]),
         "yes" if a["meets_target"] else "**no**"] for a in res["accuracy"]])


def rotation_table(res: dict) -> str:
    """Per cell with a rotational check (PET): spread of E/n over random orientations."""
    rows = [[r["model"], r["regime"], _variant(r), r["seed"], "on" if r["rotate"] else "off",
             rot["n_rotations"], _f(rot["mean_std_mev_per_atom"], 2),
             _f(rot["max_spread_mev_per_atom"], 2), _f(r["test_mae"])]
            for r in res.get("rows", []) for rot in [r.get("rotational_error")] if rot]
    return _table(["model", "regime", "makeup", "seed", "rotational augmentation",
                   "orientations", "mean std E/n", "max spread", "test MAE"], rows)


def settings_section(res: dict) -> str | None:
    """The settings one group was trained with, compared on validation (the kept one marked);
    None when no group was trained in more than one way."""
    rows = [[r["regime"], r["model"], _variant(r), r["hypers"], r["steps"],
             f"{r['force_weight']:g}", f"{r['ema_decay']:g}", r["device"], r["n_seeds"],
             _f(r["best_val_mae"]), _f(r["train_mae"]), _f(r["test_mae"]),
             "**kept**" if r["kept"] else ""] for r in res.get("settings_compared", [])]
    return _table(["regime", "model", "makeup", "hypers", "steps", "force w", "EMA", "device",
                   "seeds", "val MAE", "train MAE", "test MAE", ""], rows) if rows else None


README_BLOCK = "converged-table"  # the README block `python -m experiments.report` writes


def readme_summary(res: dict) -> str:
    """The README's summary of the converged study: the accuracy section and its grid."""
    n = len(res["cells"])
    return (f"{n} cells run so far (`results/converged/`, one seed unless the table says "
            f"otherwise; devices: {', '.join(res['devices'])}). Test MAE per regime, makeup "
            "`full`:\n\n" + accuracy_section(res) + "\n\nAgainst the target per regime:\n\n"
            + target_table(res) + "\n\nColumns, settings compared and rotational checks: "
            "[results/REPORT.md](results/REPORT.md).")


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


def reading(res: dict, earlier: dict | None) -> dict[str, str]:
    """Tables setting the converged study beside the earlier, under-fitted one
    (``body_order_trends.json``: both regimes mixed, fixed steps, energies only), computed from
    both JSON files; rows whose cells have not been run are left out. MAEs meV/atom."""
    means = [r for r in res["means"] if r["n_train"] is None]
    plain = [r for r in means if not r["lam"]]
    o = [r for r in earlier["summary"] if r["makeup"] == "full"] if earlier else []
    totals = [["earlier (regimes mixed)", _f(min(r["total_mae"] for r in o)),
               _f(max(r["total_mae"] for r in o))]] if o else []
    totals += [[a["regime"], _f(min(v["test_mae"] for v in a["models"].values())),
                _f(max(v["test_mae"] for v in a["models"].values()))]
               for a in res["accuracy"] if a["models"]]
    old = ([_f(_median(r["total_mae"] for r in o)),
            _f(_median(x for r in o for x in r["order_mae"][1:4]))] if o else ["–", "–"])
    orders, fit, moves = [], [], []
    for g in dict.fromkeys(r["regime"] for r in plain):
        full = [r for r in plain if r["regime"] == g and r["makeup"] == "full"]
        tot = _median(r["test_mae"] for r in full)
        med = _median(x for r in full for x in r["test_order_mae"][1:])
        if full and math.isfinite(med):
            orders.append([g, _f(tot), _f(med), *old, "yes" if med > 3 * tot else "no"])
        acc = next((a for a in res["accuracy"] if a["regime"] == g), {"models": {}})
        fit += [[g, m, _f(v["train_mae"]), _f(v["best_val_mae"]),
                 "yes" if v["train_mae"] > 0.8 * v["best_val_mae"] else "no"]
                for m, v in acc["models"].items() if math.isfinite(v.get("train_mae", math.nan))]
        by = {(r["model"], r["makeup"]): r for r in plain if r["regime"] == g}
        for mk in ("up_to:4+atoms", "up_to:2"):
            moves += [[g, f"`{mk}`", m, _f(a["test_order_mae"][1]), _f(b["test_order_mae"][1]),
                       _f(a["test_mae"]), _f(b["test_mae"]), "yes" if _how(a) != _how(b) else ""]
                      for m, k in by if k == "full" and (m, mk) in by
                      for a, b in [(by[m, "full"], by[m, mk])]]
    regs = []
    for r in (r for r in means if r["lam"]):
        base = next((p for p in plain if (p["model"], p["makeup"], p["regime"])
                     == (r["model"], r["makeup"], r["regime"])), None)
        if base:
            regs.append([r["model"], r["regime"], f"{r['lam']:g}", *[
                _f(x[k]) for k in ("test_mae", "heldout_mae", "other_regime_mae",
                                   "effective_order") for x in (base, r)]])
    return dict(
        earlier_steps=str(earlier["config"]["steps"]) if earlier else "–",
        totals_table=_table(["study / regime", "lowest", "highest"], totals),
        orders_table=_table(["regime", "median total", "median E^(2..4)",
                             "earlier median total", "earlier median E^(2..4)",
                             "E^(2..4) > 3 × total"], orders),
        fit_table=_table(["regime", "model", "train MAE", "validation MAE",
                          "train > 0.8 × validation"], fit),
        makeup_table=_table(["regime", "makeup", "model", "E^(2) `full`", "E^(2)",
                             "total `full`", "total", "trained otherwise"], moves),
        regulariser_table=_table(["model", "regime", "λ", "test (λ=0)", "test", "H_9/H_10 (λ=0)",
                                  "H_9/H_10", "other regime (λ=0)", "other regime",
                                  "effective order (λ=0)", "effective order"], regs))


def models_values(folder: Path, res: dict) -> dict[str, str]:
    """What is shipped: files present, total size, bytes per architecture."""
    files = [folder / "models" / f"{k}.jbo" for k in res["cells"]]
    present = [f for f in files if f.exists()]
    total = sum(f.stat().st_size for f in present)
    return dict(n_present=str(len(present)), n_files=str(len(files)),
                total_mb=f"{total / 1e6:.2f}", bytes_per_model=", ".join(
                    f"{m} {b / 1e3:.0f} kB" for m, b in res["bytes_per_model"].items()))


SECTIONS = ("converged", "converged_settings", "converged_rest")  # of the report template


def section(results: Path, rel: str = ".", quick: str = "") -> dict | None:
    """The converged study's template values ``{section: {placeholder: text}}`` (see
    :mod:`experiments.report_render`), or None when ``results/converged`` has no JSON."""
    folder = results / "converged"
    p = folder / "converged.json"
    if not p.exists():
        return None
    res = json.loads(p.read_text())
    old = results / "body_order_trends" / "body_order_trends.json"
    earlier = json.loads(old.read_text()) if old.exists() else None
    cfg, data = res["config"], res["data"]
    figs = {f: f"![{f}]({rel}/converged/{f})" for f in res.get("figures", [])}
    pick = lambda prefix: "\n\n".join(v for k, v in figs.items() if k.startswith(prefix))  # noqa
    counts = "; ".join(f"{g}: {v['train_parents']} training parents ({v['pool']} pool + "
                       f"{v['complete'] - v['test_parents']} complete), {v['test_parents']} "
                       "test parents" for g, v in data.items() if g != "heldout")
    settings = settings_section(res)
    return dict(
        converged=dict(
            quick=" (quick CI run)" if res.get("quick") else "", db_name=Path(res["db"]).name,
            data_counts=counts, n_heldout=str(len(data["heldout"])),
            val_percent=_f(100 * cfg["val_fraction"], 0), batch_size=str(cfg["batch_size"]),
            patience=str(cfg["patience"]), eval_every=str(cfg["eval_every"]),
            n_cells=str(len(res["cells"])), cell_hours=_f(res["cell_seconds"] / 3600, 2),
            devices=", ".join(res["devices"]), n_superseded=str(len(res.get("superseded", []))),
            accuracy_table=accuracy_section(res), target_table=target_table(res),
            rotation_table=rotation_table(res)),
        converged_settings=dict(settings_table=settings) if settings else None,
        converged_rest=dict(
            validation_figures=pick("validation_curves"), **models_values(folder, res),
            spectra_figures=pick("spectra"), order_table=order_section(res),
            order_figures=pick("order_vs_total"), threshold=f"{res['threshold_mev_per_atom']:g}",
            effective_table=effective_section(res), effective_figures=pick("effective_order"),
            learning_figures=pick("learning_curves")
            or "Not in this run (`--sizes`, `--lc-models`).",
            generalization_table=generalization_section(res),
            generalization_figures=pick("generalization"), **reading(res, earlier)))
