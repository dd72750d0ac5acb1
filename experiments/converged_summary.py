"""Numbers and figures of the converged study, from its cells' JSON (pure: no training).

Every number comes from :mod:`jbo.analysis`'s metrics on the spectra stored in a cell
(decomposed from its shipped model). Energies per atom in meV/atom.

* :func:`summarize`: one row per cell (accuracy, per-order errors, spectra, effective order,
  stop reason, compute, device).
* :func:`accuracy_table`: per regime, the ``full`` makeup's seed-mean test MAE per model, the
  best of them against the regime's target, each model's stop kinds and budget.
* :func:`effective_order`: the order beyond which a spectrum is negligible.
* :func:`figures`: (a) spectra, (b) per-order vs total error, (c) effective order, (d)
  learning curves, (e) generalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from experiments import common
from jbo import analysis, plots
from jbo.study import StopReason, setting_of
from jbo.study.fixed import spectra

K_SHOW = 8        # orders shown (H_8 test parents)
K_ERR = 4         # per-order errors reported for k = 1..K_ERR
THRESHOLD = 1.0   # meV/atom: effective order = smallest k with Σ_{j>k} mean|E^(j)|/n below it
TARGETS = {"low": 5.0, "high": 25.0}  # issue 15's total-energy MAE targets (meV/atom)
GROUP = ("model", "makeup", "regime", "n_train", "lam")
FIELDS = ("test_mae", "other_regime_mae", "heldout_mae", "test_order_mae", "heldout_order_mae",
          "spectrum", "effective_order", "best_val_mae", "train_seconds", "steps",
          "n_train_rows", "model_bytes")


def effective_order(mean_abs: Sequence[float], threshold: float = THRESHOLD) -> int:
    """Smallest k such that Σ_{j>k} mean_abs[j-1] < ``threshold`` (meV/atom; orders a
    spectrum does not have, NaN, count as 0). ``mean_abs[k-1]`` = mean over clusters of
    |E^(k)|/n (:func:`jbo.analysis.spectrum`)."""
    a = np.nan_to_num(np.asarray(mean_abs, float), nan=0.0)
    tail = np.concatenate([np.cumsum(a[::-1])[::-1][1:], [0.0]])  # tail[k-1] = Σ_{j>k}
    return int(np.argmax(tail < threshold) + 1)


def _set(cell: dict, name: str, regime: str | None = None):
    t = cell["tests"].get(name)
    if t is None:
        return None
    model, ref = spectra(t)
    if regime is not None:
        keep = np.array([g == regime for g in model.regimes], bool)
        model, ref = model.rows(keep), ref.rows(keep)
    return model, ref


def overrides(cell: dict) -> str:
    """A cell's hyperparameters beyond the study's defaults, as ``name=value, ...`` ('' none)."""
    return ", ".join(f"{k}={v}" for k, v in cell.get("extra_hypers", ()))


def summarize(cell: dict) -> dict:
    """The numbers of one cell (see the module docstring)."""
    c = cell["cell"]
    test = _set(cell, "test")
    other = _set(cell, "other_regime")
    held = _set(cell, "heldout", c["regime"])   # H_9/H_10 of the training regime
    held_other = _set(cell, "heldout", next((g for g in TARGETS if g != c["regime"]), None))
    nan = float("nan")
    mae = lambda s: analysis.total_mae(*s) if s and len(s[0]) else nan  # noqa: E731
    omae = lambda s: analysis.order_mae(*s, K_ERR) if s and len(s[0]) else [nan] * K_ERR  # noqa
    spec = analysis.spectrum(test[0], K_SHOW)["mean_abs_mev_per_atom"]
    ref_spec = analysis.spectrum(test[1], K_SHOW)["mean_abs_mev_per_atom"]
    return dict(model=c["model"], makeup=c["makeup"], regime=c["regime"], seed=c["seed"],
                setting=setting_of(c),
                n_train=c["n_train"], lam=c["lam"], rotate=c["rotate"], key=cell["key"],
                stop_kind=StopReason.parse(cell["stop_reason"]).kind, stop_reason=cell["stop_reason"],
                steps=cell["steps"], train_seconds=cell["train_seconds"],
                max_seconds=c["max_seconds"], device=cell["device"],
                best_val_mae=cell["best_val_mae"], plateau=cell["plateau"],
                train_mae=cell.get("train_mae", float("nan")),
                force_weight=c["force_weight"], ema_decay=c.get("ema_decay", 0.0),
                hypers=overrides(c),
                model_bytes=cell["model_bytes"], n_train_rows=cell["n_train_rows"],
                test_mae=mae(test), other_regime_mae=mae(other), heldout_mae=mae(held),
                heldout_other_mae=mae(held_other), test_order_mae=omae(test),
                heldout_order_mae=omae(held), other_regime_order_mae=omae(other),
                spectrum=spec, ref_spectrum=ref_spec, effective_order=effective_order(spec),
                ref_effective_order=effective_order(ref_spec),
                rotational_error=cell.get("rotational_error"),
                val_steps=cell["val_curve"]["step"], val_mae=cell["val_curve"]["mae"])


def _by_setting(rows: Sequence[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """Rows by group (:data:`GROUP` and rotation), then by setting (its seeds)."""
    out: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        k = tuple(r[g] for g in GROUP) + (r["rotate"],)
        out.setdefault(k, {}).setdefault(r["setting"], []).append(r)
    return out


def one_per_setting(rows: Sequence[dict]) -> tuple[list[dict], list[str]]:
    """Of settings that differ only in how they were trained (schedule length, wall time,
    patience, EMA, force-loss weight, model hyperparameters, device) keep the one whose seeds
    have the lowest mean best *validation* MAE, with all its seeds (model selection never sees
    the test sets; seed means never mix settings). Returns the kept rows (in order) and the keys
    of the others."""
    kept = set()
    for settings in _by_setting(rows).values():
        best = min(settings.values(), key=lambda rs: np.mean([r["best_val_mae"] for r in rs]))
        kept |= {id(r) for r in best}
    return [r for r in rows if id(r) in kept], [r["key"] for r in rows if id(r) not in kept]


def settings_compared(rows: Sequence[dict]) -> list[dict]:
    """Every setting of a group that :func:`one_per_setting` chose among (groups with more
    than one setting): how it was trained, its seed-mean validation MAE (what chose), train
    and test MAE, and whether it was kept; sorted by group, then validation MAE."""
    kept = {r["key"] for r in one_per_setting(rows)[0]}
    among = [r for settings in _by_setting(rows).values() if len(settings) > 1
             for rs in settings.values() for r in rs]
    show = (*GROUP, "setting", "n_seeds", "force_weight", "ema_decay", "hypers", "device",
            "best_val_mae", "train_mae", "test_mae")
    out = [{**{k: m[k] for k in show}, "steps": int(m["steps"]), "kept": m["key"] in kept}
           for m in common.seed_means(among, (*GROUP, "rotate", "setting"),
                                      ("steps", "best_val_mae", "train_mae", "test_mae"))]
    return sorted(out, key=lambda r: (r["regime"], r["model"], r["makeup"],
                                      str(r["n_train"]), r["lam"], r["best_val_mae"]))


def seed_means(rows: Sequence[dict]) -> list[dict]:
    """Rows averaged over seeds per (model, makeup, regime, n_train, lam)."""
    return common.seed_means(rows, GROUP, FIELDS)


def accuracy_table(rows: Sequence[dict]) -> list[dict]:
    """Per regime: the ``full`` makeup (all rows, no regularizer), per model the seed-mean test
    MAE (± sd), stop kinds, steps, seconds and budget; the best model against the target."""
    out = []
    for regime in sorted({r["regime"] for r in rows}):
        sel = [r for r in rows if r["regime"] == regime and r["makeup"] == "full"
               and r["n_train"] is None and not r["lam"]]
        per_model = {}
        for m in dict.fromkeys(r["model"] for r in sel):
            rs = [r for r in sel if r["model"] == m]
            v = np.array([r["test_mae"] for r in rs])
            per_model[m] = dict(
                test_mae=float(v.mean()), test_mae_sd=float(v.std(ddof=1)) if v.size > 1
                else float("nan"), n_seeds=len(rs),
                stop_kinds=sorted({r["stop_kind"] for r in rs}),
                steps=int(np.mean([r["steps"] for r in rs])),
                train_seconds=float(np.mean([r["train_seconds"] for r in rs])),
                max_seconds=rs[0]["max_seconds"], best_val_mae=float(np.mean(
                    [r["best_val_mae"] for r in rs])), device=rs[0]["device"],
                train_mae=float(np.mean([r["train_mae"] for r in rs])),
                force_weight=rs[0]["force_weight"], ema_decay=rs[0]["ema_decay"],
                hypers=rs[0]["hypers"])
        best = min(per_model, key=lambda m: per_model[m]["test_mae"]) if per_model else None
        target = TARGETS.get(regime, float("nan"))
        out.append(dict(regime=regime, target=target, best_model=best,
                        best_mae=per_model[best]["test_mae"] if best else float("nan"),
                        meets_target=bool(best and per_model[best]["test_mae"] <= target),
                        models=per_model))
    return out


def bytes_per_model(rows: Sequence[dict]) -> dict[str, int]:
    """File size of a shipped model per architecture (bytes; the largest seen)."""
    out: dict[str, int] = {}
    for r in rows:
        out[r["model"]] = max(out.get(r["model"], 0), int(r["model_bytes"]))
    return out


# ---------------------------------------------------------------- figures
def figures(rows: Sequence[dict], out: Path) -> list[str]:
    """The study's figures (PNG under ``out``); returns their file names."""
    files = []
    main = seed_means([r for r in rows if r["n_train"] is None and not r["lam"]])
    ks = list(range(1, K_SHOW + 1))
    regimes = sorted({r["regime"] for r in main})
    makeups = list(dict.fromkeys(r["makeup"] for r in main))
    ref_rows = {r["regime"]: r for r in rows}
    panels = {}
    for g in regimes:
        for mk in makeups:
            sel = [r for r in main if r["regime"] == g and r["makeup"] == mk]
            if sel:
                panels[f"{g}, {mk}"] = {"reference": (ks, ref_rows[g]["ref_spectrum"]),
                                        **{r["model"]: (ks, r["spectrum"]) for r in sel}}
    if panels:  # (a)
        files.append(plots.curve_grid(
            panels, out / "spectra.png", "body order k", "mean |E^(k)|/n (meV/atom)",
            "(a) Body-order spectra on test parents: models vs reference", ncols=len(makeups),
            logy=True, styles={"reference": dict(color="k", lw=2.5, marker="s")},
            sharey=True).name)
    for g in regimes:  # (b) per-order vs total error
        pts = {f"E^({k})": [(r["test_mae"], r["test_order_mae"][k - 1],
                             f"{r['model']}/{r['makeup']}") for r in main
                            if r["regime"] == g and np.isfinite(r["test_order_mae"][k - 1])]
               for k in range(1, K_ERR + 1)}
        if any(pts.values()):
            files.append(plots.scatter_labelled(
                pts, out / f"order_vs_total_{g}.png", "total-energy MAE (meV/atom)",
                "MAE of E^(k)/n (meV/atom)", f"(b) {g}: per-order vs total error (test)",
                logy=True).name)
        eff = {r["model"]: {} for r in main if r["regime"] == g}  # (c)
        for r in main:
            if r["regime"] == g:
                eff[r["model"]][r["makeup"]] = r["effective_order"]
        if eff:
            eff["reference"] = {mk: ref_rows[g]["ref_effective_order"] for mk in makeups}
            files.append(plots.bars(
                eff, out / f"effective_order_{g}.png", "effective body order",
                f"(c) {g}: smallest k with Σ_(j>k) mean|E^(j)|/n < {THRESHOLD:g} meV/atom").name)
    stops = {}  # the curves behind the accuracy table: where each model stopped
    for g in regimes:
        sel = [r for r in rows if r["regime"] == g and r["makeup"] == "full"
               and r["n_train"] is None and not r["lam"] and r["val_steps"]]
        first_seed = {}
        for r in sel:
            if r["model"] not in first_seed or r["seed"] < first_seed[r["model"]]["seed"]:
                first_seed[r["model"]] = r
        if first_seed:
            stops[g] = {f"{m} ({r['stop_kind']})": (r["val_steps"], r["val_mae"])
                        for m, r in first_seed.items()}
    if stops:
        files.append(plots.curve_grid(
            stops, out / "validation_curves.png", "training step",
            "validation MAE (meV/atom)", "Validation curves, makeup full (lowest seed)",
            ncols=len(stops), logy=True).name)
    lc = seed_means([r for r in rows if not r["lam"]])  # (d)
    curves = {}
    for g in regimes:
        for mk in makeups:
            sel = [r for r in lc if r["regime"] == g and r["makeup"] == mk]
            series = {}
            for m in dict.fromkeys(r["model"] for r in sel):
                pts = sorted((r["n_train_rows"], r["test_mae"]) for r in sel if r["model"] == m)
                if len(pts) > 1:
                    series[m] = tuple(zip(*pts))
            if series:
                curves[f"{g}, {mk}"] = series
    if curves:
        files.append(plots.curve_grid(
            curves, out / "learning_curves.png", "training structures", "test MAE (meV/atom)",
            "(d) Learning curves (total energy, test parents)", ncols=min(4, len(curves)),
            logx=True, logy=True).name)
    gen = {}  # (e)
    first = makeups[0] if makeups else None
    for r in seed_means([r for r in rows if r["n_train"] is None and r["makeup"] == first]):
        label = f"{r['model']}{' +reg' if r['lam'] else ''} <- {r['regime']}"
        gen[label] = {"test H8": r["test_mae"], "H9/H10": r["heldout_mae"],
                      "other regime H8": r["other_regime_mae"]}
    if gen:
        files.append(plots.bars(gen, out / "generalization.png", "MAE (meV/atom)",
                                f"(e) Generalisation (makeup {first})", logy=True).name)
    return files
