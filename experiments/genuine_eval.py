"""Decompose the shipped genuine models with jbo and set them beside the Flax zoo (issue 23).

Per shipped model ``results/genuine/<regime>/<model>/<file>``: the test parents of the
converged study (every subcluster labelled, so the reference MBE per order is known) are
decomposed exhaustively by :func:`jbo.decompose.body_orders` through
:func:`jbo.foreign.load_potential`; the train and validation MAEs are of the total energy of
the full clusters (the model's own batched evaluator; train: the full clusters among the
makeup's training rows, as the converged study's ``train_mae``). ``summary.json`` per model,
one ``results/genuine/summary.json`` and ``SIDE_BY_SIDE.md`` with the Flax rows of
``results/converged/converged.json`` (same makeup, seed 0). A model folder is
``<regime>/<model>`` (makeup ``full``) or ``<regime>/<model>-<makeup>``, the makeup read from
its ``training.json``. MAEs meV/atom, energies eV.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from experiments.converged_summary import K_ERR, K_SHOW, effective_order
from experiments.genuine_train import isolated_h, split_of
from jbo import analysis

LABEL = {"pet": "PET (metatrain)", "soap_bpnn": "SOAP-BPNN (metatrain)",
         "mace": "MACE (mace-torch)"}


def total_mae(pot, records) -> float:
    """Mean |E - E_ref| / n (meV/atom) of ``pot`` on whole clusters (one batched call)."""
    items = [(np.asarray(r.species), np.asarray(r.positions, np.float64)) for r in records]
    out = pot.evaluator(items, False)
    e = np.array([float(o[0]) for o in out])
    n = np.array([r.n_atoms for r in records], float)
    return float(1e3 * np.mean(np.abs(e - np.array([r.energy for r in records])) / n))


def evaluate(path: Path, regime: str, model: str, data, makeup: str = "full") -> dict:
    """The numbers of one shipped model (see the module docstring)."""
    from jbo.foreign import load_potential

    t0 = time.perf_counter()
    pot = load_potential(path)
    parts = split_of(data, regime, makeup)
    full_train = [r for r in parts["train"] if r.is_full]
    test = parts["test"]
    got = analysis.decompose_records(pot, test)  # exhaustive, on the host evaluator
    ref = data.ref.take(list(got.clusters))
    e_h = isolated_h(data)
    e1 = got.orders[:, 0] / np.asarray(got.n)
    spec = analysis.spectrum(got, K_SHOW)["mean_abs_mev_per_atom"]
    training = json.loads((path.parent / "training.json").read_text()) \
        if (path.parent / "training.json").exists() else {}
    return dict(
        regime=regime, model=model, makeup=makeup,
        file=f"{regime}/{path.parent.name}/{path.name}",
        bytes=path.stat().st_size, dtype=pot.dtype, cutoff=pot.cutoff,
        # pinned composition baseline vs what the model gives an isolated H (E^(1)/n): the
        # learned single-atom output of the network on top of the pinned baseline
        isolated_h_ev=e_h, e1_per_atom_minus_isolated_h_mev=float(1e3 * np.mean(e1 - e_h)),
        e1_per_atom_spread_mev=float(1e3 * np.ptp(e1)),
        n_train=len(parts["train"]), n_valid=len(parts["valid"]), n_test=len(test),
        n_train_full=len(full_train),
        train_mae=total_mae(pot, full_train), valid_mae=total_mae(pot, parts["valid"]),
        test_mae=analysis.total_mae(got, ref), test_order_mae=analysis.order_mae(got, ref, K_ERR),
        spectrum=spec, effective_order=effective_order(spec),
        ref_effective_order=effective_order(
            analysis.spectrum(ref, K_SHOW)["mean_abs_mev_per_atom"]),
        check=dict(cluster=got.clusters[0], total=float(got.totals[0]),
                   per_order=got.orders[0].tolist()),
        training=training, eval_seconds=time.perf_counter() - t0)


def flax_rows(converged: Path, regime: str, model: str, makeup: str = "full") -> dict | None:
    """The Flax zoo cell of the same class and makeup (seed 0, no regularizer, all rows)."""
    rows = json.loads(converged.read_text())["rows"]
    hit = [r for r in rows if r["model"] == model and r["regime"] == regime and
           r["makeup"] == makeup and r["seed"] == 0 and not r["lam"] and r["n_train"] is None]
    return hit[0] if hit else None


def label(s: dict, flax: bool = False) -> str:
    """Row name of a genuine summary (or of its Flax counterpart), with a makeup not ``full``."""
    mk = s.get("makeup", "full")
    name = f"Flax zoo `{s['model']}`" if flax else f"genuine {LABEL[s['model']]}"
    return name if mk == "full" else f"{name} on `{mk}`"


def shipped_cells(results: Path) -> list[tuple[str, str, str, Path]]:
    """(regime, model, makeup, model file) of every shipped model under ``results``, in
    (regime, model, full first, folder name) order. A folder whose name disagrees with the
    makeup in its training.json is an error (it would be set beside the wrong Flax cell)."""
    from experiments.genuine import FILE
    from experiments.genuine_train import MODELS, cell_name

    out = []
    for regime in ("low", "high"):
        for model in MODELS:
            for d in sorted((results / regime).glob(f"{model}*"), key=lambda d: d.name != model):
                if d.name != model and not d.name.startswith(model + "-"):
                    continue
                path = d / FILE[model]
                if not path.exists():
                    continue
                tj = d / "training.json"
                mk = json.loads(tj.read_text()).get("makeup", "full") if tj.exists() else "full"
                if cell_name(model, mk) != d.name:
                    raise ValueError(f"{d}: training.json says makeup {mk!r}, whose folder is "
                                     f"{cell_name(model, mk)!r}; rename the folder")
                out.append((regime, model, mk, path))
    return out


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.1f}"


def table(summaries: list[dict], converged: Path) -> str:
    """SIDE_BY_SIDE.md: genuine vs Flax of the same class, per regime."""
    head = ("| regime | model | train MAE | valid MAE | test MAE | E^(1) | E^(2) | E^(3) | E^(4) "
            "| eff. order | epochs / steps | train s | file kB |\n" + "|---" * 13 + "|\n")
    lines = []
    for s in summaries:
        t = s["training"]
        lines.append(f"| {s['regime']} | {label(s)} | {_fmt(s['train_mae'])} "
                     f"| {_fmt(s['valid_mae'])} | **{_fmt(s['test_mae'])}** | "
                     + " | ".join(_fmt(v) for v in s["test_order_mae"])
                     + f" | {s['effective_order']} | {t.get('epochs', '–')} ep | "
                     f"{_fmt(t.get('seconds'))} | {s['bytes'] / 1e3:.0f} |")
        f = flax_rows(converged, s["regime"], s["model"], s.get("makeup", "full"))
        if f:
            lines.append(f"| {s['regime']} | {label(s, True)} | {_fmt(f['train_mae'])} | "
                         f"{_fmt(f['best_val_mae'])} | **{_fmt(f['test_mae'])}** | "
                         + " | ".join(_fmt(v) for v in f["test_order_mae"])
                         + f" | {f['effective_order']} | {f['steps']} steps | "
                         f"{_fmt(f['train_seconds'])} | {f['model_bytes'] / 1e3:.0f} |")
    return ("# Genuine models (their own trainers) vs jbo's Flax zoo, same split\n\n"
            "Written by `python -m experiments.genuine evaluate`. MAEs in meV/atom: total "
            "energy on the full H_8 clusters (train, validation = the converged study's split, "
            "makeup `full` unless the row names another, seed 0; train: the full clusters of "
            "the training rows) and on the regime's test parents; E^(k): MAE of E^(k)/n "
            "against the reference MBE of the test parents. Flax rows: "
            "`results/converged/converged.json` (validation = best validation MAE).\n\n"
            + head + "\n".join(lines) + "\n")


def evaluate_all(results: Path, db: Path) -> list[dict]:
    """Evaluate every shipped model under ``results``; write the summaries and the table."""
    from jbo.study.regimes import load_regimes

    data = load_regimes(str(db))
    out = []
    for regime, model, makeup, path in shipped_cells(results):
        done = path.parent / "summary.json"
        if done.exists() and done.stat().st_mtime > max(
                path.stat().st_mtime, (path.parent / "training.json").stat().st_mtime):
            out.append(json.loads(done.read_text()))  # up to date: not decomposed again
            continue
        s = evaluate(path, regime, model, data, makeup)
        done.write_text(json.dumps(s, indent=1))
        print(f"{regime}/{path.parent.name}: test {s['test_mae']:.1f}, train "
              f"{s['train_mae']:.1f}, valid {s['valid_mae']:.1f} meV/atom; "
              f"orders {s['test_order_mae']}")
        out.append(s)
    (results / "summary.json").write_text(json.dumps(out, indent=1))
    converged = results.parent / "converged" / "converged.json"
    (results / "SIDE_BY_SIDE.md").write_text(table(out, converged))
    return out
