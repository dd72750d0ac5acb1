"""Matplotlib figures shared by the experiments (Agg backend, PNG files).

Every function takes plain numbers (no jbo objects), draws one figure, saves it to ``path`` and
returns the path. Energies are labelled with their units by the caller's axis labels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["parity_grid", "curves", "curve_grid", "bars", "scatter_labelled", "color"]

_CYCLE = plt.rcParams["axes.prop_cycle"].by_key()["color"]
_MARKERS = "osD^v<>ph*"


def color(i: int) -> str:
    return _CYCLE[i % len(_CYCLE)]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(n: int, ncols: int, size: float = 3.2):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + 0.6, size * nrows + 0.4),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def parity_grid(panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
                path: str | Path, xlabel: str, ylabel: str, title: str = "",
                ncols: int = 4) -> Path:
    """One parity panel per key of ``panels``; each holds ``{series: (x_ref, y_model)}``."""
    fig, axes = _grid(len(panels), ncols)
    for ax, (name, series) in zip(axes, panels.items()):
        lo, hi = np.inf, -np.inf
        for i, (label, (x, y)) in enumerate(series.items()):
            x, y = np.asarray(x, float), np.asarray(y, float)
            if x.size == 0:
                continue
            ax.scatter(x, y, s=12, alpha=0.7, color=color(i), marker=_MARKERS[i % 10],
                       label=label)
            lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
        if np.isfinite(lo):
            pad = 0.05 * (hi - lo + 1e-12)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    if axes:
        axes[0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _draw_curves(ax, series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                 logx: bool, logy: bool, styles: Mapping[str, dict] | None = None) -> None:
    for i, (label, (x, y)) in enumerate(series.items()):
        st = dict(color=color(i), marker=_MARKERS[i % 10], ms=4, lw=1.3)
        st.update((styles or {}).get(label, {}))
        y = np.asarray(y, float)
        if logy:  # exact zeros (and round-off below 1e-6) are not drawn on a log axis
            y = np.where(y > 1e-6, y, np.nan)
        ax.plot(np.asarray(x, float), y, label=label, **st)
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")


def curves(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path,
           xlabel: str, ylabel: str, title: str = "", logx: bool = False, logy: bool = False,
           styles: Mapping[str, dict] | None = None) -> Path:
    """Lines ``{label: (x, y)}`` on one axis."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    _draw_curves(ax, series, logx, logy, styles)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def curve_grid(panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
               path: str | Path, xlabel: str, ylabel: str, title: str = "", ncols: int = 4,
               logx: bool = False, logy: bool = False,
               styles: Mapping[str, dict] | None = None, sharey: bool = False) -> Path:
    """One line panel per key of ``panels`` (``{series: (x, y)}`` each)."""
    fig, axes = _grid(len(panels), ncols)
    ylim = None
    if sharey and logy:
        vals = [v for s in panels.values() for (_, y) in s.values() for v in y
                if np.isfinite(v) and v > 1e-6]
        ylim = (min(vals) / 1.5, max(vals) * 1.5) if vals else None
    for ax, (name, series) in zip(axes, panels.items()):
        _draw_curves(ax, series, logx, logy, styles)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if ylim:
            ax.set_ylim(*ylim)
    if axes:
        axes[0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def bars(groups: Mapping[str, Mapping[str, float]], path: str | Path, ylabel: str,
         title: str = "", logy: bool = False) -> Path:
    """Grouped bars: ``{group (x tick): {series: value}}``."""
    names = list(groups)
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(names) * max(1, len(series)) / 2), 3.8))
    w = 0.8 / max(1, len(series))
    x = np.arange(len(names))
    for i, s in enumerate(series):
        v = [groups[g].get(s, np.nan) for g in names]
        ax.bar(x + (i - (len(series) - 1) / 2) * w, v, w, label=s, color=color(i))
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def scatter_labelled(points: Mapping[str, Sequence[tuple[float, float, str]]],
                     path: str | Path, xlabel: str, ylabel: str, title: str = "",
                     logy: bool = False) -> Path:
    """Scatter ``{series: [(x, y, annotation), ...]}`` with each point annotated."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for i, (label, pts) in enumerate(points.items()):
        if not pts:
            continue
        x, y, names = zip(*pts)
        ax.scatter(x, y, color=color(i), marker=_MARKERS[i % 10], label=label, s=30)
        for xi, yi, t in pts:
            ax.annotate(t, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)
