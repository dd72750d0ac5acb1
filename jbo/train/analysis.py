"""Body-order spectra of trained models and of the reference (numpy out, meV/atom summaries)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jbo import lattice
from jbo.data.records import Record
from jbo.train.dataset import pad_records
from jbo.decompose import body_orders
from jbo.train.losses import EnergyModel, contract_energy_fn

__all__ = ["model_per_order", "reference_per_order", "spectrum_summary", "high_order_stats"]


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _decompose(model: EnergyModel, params, positions, species, mask, max_order, layout):
    res = body_orders(contract_energy_fn(model, params), positions, species,
                      max_order=max_order, atom_mask=mask, terms=max_order is None,
                      layout=layout)
    sq = None
    if max_order is None:  # Σ_{|S|=k} ε(S)² per order from the lattice
        sq = lattice.order_sums(res.terms**2, positions.shape[-2], axis=1)
    return res.per_order, res.total, sq


def model_per_order(model: EnergyModel, params, records: Sequence[Record],
                    max_order: int | None = None, chunk: int = 8, layout: str = "compact"
                    ) -> dict[str, np.ndarray]:
    """E^(k) of every structure (eV): ``per_order [B, K]`` (K = Nmax, or ``max_order``),
    ``total [B]``, ``eps_sq [B, K]`` (Σ_{|S|=k} ε(S)², exhaustive only), ``n [B]``.

    Structures are padded to the largest size and decomposed ``chunk`` at a time (exhaustive
    mode: 2^Nmax energies each; pass ``max_order`` for large clusters). ``layout``: the
    engine's exhaustive layout (``"masks"`` compiles ~10x faster, runs a few times slower).
    """
    n_max = max(r.n_atoms for r in records)
    out: dict[str, list] = {"per_order": [], "total": [], "eps_sq": []}
    for i in range(0, len(records), chunk):
        part = list(records[i:i + chunk])
        b = pad_records(part, n_max=n_max, size=chunk)
        per, tot, sq = _decompose(model, params, jnp.asarray(b.positions),
                                  jnp.asarray(b.species), jnp.asarray(b.mask), max_order, layout)
        out["per_order"].append(np.asarray(per)[:len(part)])
        out["total"].append(np.asarray(tot)[:len(part)])
        if sq is not None:
            out["eps_sq"].append(np.asarray(sq)[:len(part)])
    res = {k: np.concatenate(v) for k, v in out.items() if v}
    res["n"] = np.array([r.n_atoms for r in records])
    return res


def reference_per_order(records: Sequence[Record]) -> dict[str, dict[str, np.ndarray]]:
    """Reference MBE of every parent whose subsets are all in ``records``:
    ``{cluster: {"per_order": [n] eV, "eps_sq": [n] eV², "total": eV, "n": n}}``."""
    by: dict[str, dict[int, float]] = {}
    size: dict[str, int] = {}
    for r in records:
        by.setdefault(r.cluster, {})[r.subset] = r.energy
        size[r.cluster] = r.n_parent
    out = {}
    for c, e in by.items():
        n = size[c]
        if len(e) != (1 << n) - 1:
            continue
        lat = np.zeros(1 << n)
        for s, v in e.items():
            lat[s] = v
        terms = np.asarray(lattice.mobius(jnp.asarray(lat)))
        out[c] = {"per_order": np.asarray(lattice.order_sums(jnp.asarray(terms), n)),
                  "eps_sq": np.asarray(lattice.order_sums(jnp.asarray(terms**2), n)),
                  "total": float(lat[-1]), "n": n}
    return out


def spectrum_summary(per_order: np.ndarray, n: np.ndarray) -> dict[str, list[float]]:
    """Per order k = 1..K over structures with n ≥ k: mean E^(k)/n and mean |E^(k)|/n
    (meV/atom). ``per_order [B, K]`` in eV, ``n [B]``."""
    per_order, n = np.asarray(per_order), np.asarray(n)
    mean, mean_abs = [], []
    for k in range(1, per_order.shape[1] + 1):
        sel = n >= k
        v = 1e3 * per_order[sel, k - 1] / n[sel] if sel.any() else np.zeros(1)
        mean.append(float(v.mean()))
        mean_abs.append(float(np.abs(v).mean()))
    return {"mean_mev_per_atom": mean, "mean_abs_mev_per_atom": mean_abs}


def high_order_stats(per_order: np.ndarray, n: np.ndarray, order: int,
                     eps_sq: np.ndarray | None = None) -> dict[str, float]:
    """How much energy sits above order K, averaged over structures (meV/atom):

    ``sum_abs``: Σ_{k>K} |E^(k)| / n.  ``truncation``: |E − E_MBE(K)| / n = |Σ_{k>K} E^(k)| / n.
    ``rms_terms_mev``: √(Σ_{|S|>K} ε(S)² / n) in meV (what the ``terms`` regularizer
    penalizes, up to λ and the scale).
    """
    per_order, n = np.asarray(per_order), np.asarray(n)
    high = per_order[:, order:]
    out = {"sum_abs_mev_per_atom": float(np.mean(1e3 * np.abs(high).sum(1) / n)),
           "truncation_mev_per_atom": float(np.mean(1e3 * np.abs(high.sum(1)) / n))}
    if eps_sq is not None:
        out["rms_terms_mev"] = float(np.mean(1e3 * np.sqrt(
            np.asarray(eps_sq)[:, order:].sum(1) / n)))
    return out
