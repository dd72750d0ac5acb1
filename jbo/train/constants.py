"""Normalisation constants a model takes from its training data, as its original does.

MACE and NequIP divide their neighbour sums by the training set's average number of
neighbours within the cutoff (``avg_num_neighbors``); SOAP-BPNN scales its power spectrum to
unit RMS over the training atoms (``feature_scale``; metatrain uses a per-atom LayerNorm, which
would make the energy jump as a neighbour crosses the cutoff). Each zoo class lists the
hyperparameters it derives in ``data_constants``; a value given in the hypers always wins.
The resolved values are module hyperparameters, so they travel in checkpoints and model files.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jbo.data.batch import pad_records
from jbo.data.records import Record

__all__ = ["resolve_hypers", "avg_num_neighbors", "feature_rms"]

#: structures used to measure a constant (a fixed, evenly spaced sample: deterministic)
SAMPLE = 1024


def _sample(records: list[Record], size: int = SAMPLE) -> list[Record]:
    if len(records) <= size:
        return list(records)
    return [records[i] for i in np.linspace(0, len(records) - 1, size).astype(int)]


def avg_num_neighbors(records: list[Record], cutoff: float) -> float:
    """Mean number of other atoms within ``cutoff`` (Å) of an atom, over ``records``' atoms."""
    counts, atoms = 0, 0
    for r in _sample(records):
        d = np.linalg.norm(r.positions[:, None] - r.positions[None], axis=-1)
        counts += int(np.sum(d < cutoff)) - r.n_atoms
        atoms += r.n_atoms
    if atoms == 0:
        raise ValueError("no training atoms to take avg_num_neighbors from; set it in the hypers")
    return max(counts / atoms, 1.0)


def feature_rms(module, records: list[Record]) -> float:
    """Root mean square of ``module.features`` (``[N, F]``) over the present atoms of
    ``records``."""
    b = pad_records(_sample(records))  # one size, absent atoms masked: one compiled program
    pos, sp, mask = jnp.asarray(b.positions), jnp.asarray(b.species), jnp.asarray(b.mask)
    method = type(module).features
    params = jax.jit(lambda *a: module.init(jax.random.PRNGKey(0), *a, method=method))(
        pos[0], sp[0], mask[0])  # eager init is several times slower
    f = jax.jit(jax.vmap(lambda p, s, m: module.apply(params, p, s, m, method=method)))
    f = np.asarray(f(pos, sp, mask))[np.asarray(mask)]  # [atoms, F]
    rms = float(np.sqrt(np.mean(f**2))) if f.size else 0.0
    if not np.isfinite(rms) or rms <= 0:
        raise ValueError("the training structures give all-zero features (no neighbours within "
                         "the cutoff?); set feature_scale in the hypers")
    return rms


def resolve_hypers(name: str, hypers: dict[str, Any], records: list[Record],
                   create: Callable[..., Any] | None = None) -> dict[str, Any]:
    """``hypers`` plus the data constants of zoo model ``name`` that ``hypers`` leaves unset.

    records: the training structures. create: ``create(name, **hypers) -> module`` (default
    :func:`jbo.models.create`).
    """
    from jbo import models
    cls = models._cls(name)
    missing = [k for k in cls.data_constants if k not in hypers]
    if not missing:
        return dict(hypers)
    create = create or models.create
    out = dict(hypers)
    if "avg_num_neighbors" in missing:
        cutoff = hypers.get("cutoff", models.default_hypers(name)["cutoff"])
        out["avg_num_neighbors"] = round(avg_num_neighbors(records, cutoff), 6)
    if "feature_scale" in missing:
        module = create(name, **{**out, "feature_scale": 1.0})
        out["feature_scale"] = round(1.0 / feature_rms(module, records), 6)
    return out
