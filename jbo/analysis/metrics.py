"""One family of metrics on :class:`~jbo.analysis.Spectra` (pure numpy; meV, per atom).

Means over clusters run over those that have the order (n ≥ k) and where it is known; an order
no cluster has gives NaN. Model-vs-reference metrics take two spectra of the same clusters.
"""

from __future__ import annotations

import numpy as np

from jbo.data.spectra import Spectra

__all__ = ["spectrum", "high_order", "summarize", "high_order_weight", "order_mae",
           "total_errors", "total_mae"]


def _column(orders: np.ndarray | None, k: int, rows: int) -> np.ndarray:
    """E^(k) of every cluster (NaN where absent)."""
    if orders is None or k > orders.shape[1]:
        return np.full(rows, np.nan)
    return orders[:, k - 1]


def spectrum(s: Spectra, k_max: int | None = None) -> dict[str, list[float]]:
    """Per order k = 1..k_max (default K): mean E^(k)/n and mean |E^(k)|/n (meV/atom)."""
    mean, mean_abs = [], []
    for k in range(1, (s.K if k_max is None else k_max) + 1):
        v = 1e3 * _column(s.orders, k, len(s)) / s.n
        v = v[np.isfinite(v) & (s.n >= k)]
        mean.append(float(v.mean()) if v.size else float("nan"))
        mean_abs.append(float(np.abs(v).mean()) if v.size else float("nan"))
    return {"mean_mev_per_atom": mean, "mean_abs_mev_per_atom": mean_abs}


def high_order(s: Spectra, order: int) -> dict[str, float]:
    """How much energy sits above order K = ``order``, averaged over clusters (meV/atom):

    ``sum_abs``: Σ_{k>K} |E^(k)| / n.  ``truncation``: |E − E_MBE(K)| / n = |Σ_{k>K} E^(k)| / n.
    ``rms_terms_mev`` (when ``eps_sq`` is known): √(Σ_{|S|>K} ε(S)² / n) in meV (what the
    ``terms`` regularizer penalizes, up to λ and the scale).
    """
    high = s.orders[:, order:]
    out = {"sum_abs_mev_per_atom": float(np.mean(1e3 * np.nansum(np.abs(high), 1) / s.n)),
           "truncation_mev_per_atom": float(np.mean(1e3 * np.abs(np.nansum(high, 1)) / s.n))}
    if s.eps_sq is not None:
        out["rms_terms_mev"] = float(np.mean(1e3 * np.sqrt(
            np.nansum(s.eps_sq[:, order:], 1) / s.n)))
    return out


def summarize(s: Spectra, order: int) -> dict[str, dict]:
    """``{"spectrum": spectrum(s), "high_order": high_order(s, order)}``."""
    return {"spectrum": spectrum(s), "high_order": high_order(s, order)}


def high_order_weight(s: Spectra, order: int = 2) -> float:
    """Σ_{k>K} |E^(k)| / Σ_{k≥2} |E^(k)|, pooled over clusters (0: pairwise, 1: all high)."""
    a = np.abs(s.orders)
    hi, tot = np.nansum(a[:, order:]), np.nansum(a[:, 1:])
    return float(hi / tot) if tot > 0 else float("nan")


def _aligned(model: Spectra, ref: Spectra) -> None:
    if model.clusters != ref.clusters:
        raise ValueError("model and reference spectra must hold the same clusters in the same "
                         "order (use ref.take(model.clusters))")


def order_mae(model: Spectra, ref: Spectra, k_max: int) -> list[float]:
    """MAE of E^(k) per atom (meV/atom) for k = 1..k_max over clusters with n ≥ k where the
    reference E^(k) is known."""
    _aligned(model, ref)
    out = []
    for k in range(1, k_max + 1):
        e = np.abs(_column(model.orders, k, len(model)) - _column(ref.orders, k, len(ref)))
        e = (e / model.n)[np.isfinite(e) & (model.n >= k)]
        out.append(1e3 * float(np.mean(e)) if e.size else float("nan"))
    return out


def total_errors(model: Spectra, ref: Spectra) -> np.ndarray:
    """(prediction − reference) per atom, meV/atom, one per cluster."""
    _aligned(model, ref)
    return 1e3 * (model.totals - ref.totals) / model.n


def total_mae(model: Spectra, ref: Spectra) -> float:
    """Mean |E − E_ref| / n (meV/atom); NaN for no clusters."""
    e = total_errors(model, ref)
    return float(np.abs(e).mean()) if e.size else float("nan")
