"""The report's "Genuine models" section: the paper's own architectures (metatrain PET and
SOAP-BPNN, mace-torch MACE; :mod:`experiments.genuine`) beside the Flax zoo model of the same
class from the converged study, from ``results/genuine/summary.json`` (and any
``results/genuine/<regime>/<model>[-<makeup>]/summary.json`` not yet collected there) and
``results/converged/converged.json`` (the Flax cell of the same makeup). MAEs meV/atom; one
figure of the spectra.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from experiments.common import markdown_table as _table

REGIMES = ("low", "high")
FIGURE = "spectra_genuine_vs_flax.png"
COLOR = {"pet": "C0", "mace": "C1", "soap_bpnn": "C2"}


def _f(x, d: int = 1) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{d}f}"


def _key(s: dict) -> tuple[str, str, str]:
    return s["regime"], s["model"], s.get("makeup", "full")


def summaries(folder: Path) -> list[dict]:
    """Every evaluated (regime, model, makeup): ``summary.json``'s list, then per-model
    summaries that are not in it yet (evaluated after it was written), in (regime, model,
    folder) order."""
    from experiments.genuine_train import MODELS

    top = folder / "summary.json"
    out = json.loads(top.read_text()) if top.exists() else []
    have = {_key(s) for s in out}
    for reg in REGIMES:
        for m in MODELS:
            for p in sorted((folder / reg).glob(f"{m}*/summary.json"),
                            key=lambda p: p.parent.name != m):
                if p.parent.name != m and not p.parent.name.startswith(m + "-"):
                    continue
                s = json.loads(p.read_text())
                if _key(s) not in have:
                    out.append(s)
    return out


def pairs(results: Path) -> list[tuple[dict, dict | None]]:
    """(genuine summary, Flax converged row of the same class or None) per evaluated cell."""
    from experiments.genuine_eval import flax_rows

    conv = results / "converged" / "converged.json"
    return [(s, flax_rows(conv, *_key(s)) if conv.exists() else None)
            for s in summaries(results / "genuine")]


def table(rows: list[tuple[dict, dict | None]]) -> str:
    """Genuine and Flax rows per (regime, model, makeup): test MAE, E^(1..4) MAE, effective
    order (a makeup other than ``full`` named in the model column)."""
    from experiments.genuine_eval import label

    out = []
    for s, f in rows:
        for name, r in ((label(s), s), (label(s, True), f)):
            if r is not None:
                out.append([s["regime"], name, _f(r["test_mae"]),
                            *[_f(x) for x in r["test_order_mae"]], r["effective_order"],
                            r["ref_effective_order"]])
    return _table(["regime", "model", "test MAE", "E^(1)", "E^(2)", "E^(3)", "E^(4)",
                   "effective order", "reference"], out)


def missing(rows: list[tuple[dict, dict | None]]) -> str:
    """The (regime, model) cells of the makeup-``full`` grid with no evaluated genuine model."""
    from experiments.genuine_train import MODELS

    have = {(s["regime"], s["model"]) for s, _ in rows if s.get("makeup", "full") == "full"}
    gone = [f"{r}/{m}" for r in REGIMES for m in MODELS if (r, m) not in have]
    return ", ".join(gone) if gone else "none"


def draw(rows: list[tuple[dict, dict | None]], path: Path) -> None:
    """Spectra mean |E^(k)|/n (meV/atom, log) per regime: genuine solid, Flax dashed,
    reference grey; a makeup other than ``full`` dotted, its Flax cell dash-dotted. PNG
    metadata without the matplotlib version, so the bytes are stable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regs = [g for g in REGIMES if any(s["regime"] == g for s, _ in rows)]
    fig, axes = plt.subplots(1, len(regs), figsize=(5 * len(regs), 4), squeeze=False)
    for ax, g in zip(axes[0], regs):
        ref = None
        for s, f in (p for p in rows if p[0]["regime"] == g):
            k = range(1, len(s["spectrum"]) + 1)
            c = COLOR.get(s["model"])
            mk = s.get("makeup", "full")
            tag, (g_ls, f_ls) = ((s["model"], ("o-", "s--")) if mk == "full" else
                                 (f"{s['model']} {mk}", ("^:", "v-.")))
            ax.semilogy(k, s["spectrum"], g_ls, color=c, label=f"genuine {tag}")
            if f is not None:
                ax.semilogy(range(1, len(f["spectrum"]) + 1), f["spectrum"], f_ls, color=c,
                            label=f"Flax {tag}")
                ref = f["ref_spectrum"]
        if ref is not None:
            ax.semilogy(range(1, len(ref) + 1), ref, "-", color="0.5", lw=3, alpha=0.5,
                        label="reference")
        ax.set(title=f"{g} density", xlabel="body order k", ylabel="mean |E^(k)|/n (meV/atom)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def section(results: Path, rel: str = ".", figure: tuple[Path, str] | None = None
            ) -> dict[str, str] | None:
    """The template values of the section, or None when no genuine model is evaluated.
    ``figure``: (folder to draw the PNG in, its link relative to the report); None links
    ``{rel}/genuine/`` without drawing."""
    rows = pairs(results)
    if not rows:
        return None
    link = f"{rel}/genuine"
    if figure is not None:
        draw(rows, figure[0] / FIGURE)
        link = figure[1]
    return dict(genuine_table=table(rows), genuine_missing=missing(rows),
                genuine_figure=f"![{FIGURE}]({link}/{FIGURE})")
