"""The model zoo: a registry of flax modules that all obey one energy contract.

Every model: ``module.apply(params, positions[N,3], species[N], mask[N]) -> energy`` (scalar,
eV), with masked atoms absent; ``method="atomic_energies"`` gives ``[N]`` per-atom energies;
``module.cutoff`` (Å), ``module.is_local`` and ``module.receptive_field`` (Å) are declared.

Example::

    import jbo, jax
    from jbo import models
    module = models.create("soap_bpnn", max_radial=6)
    params = models.init(module, 0)
    f = models.energy_fn(module, params)       # a jbo.potential.Potential: f(positions, species)
    f.cutoff, f.is_local                       # static; f.params are its (traced) leaves
    model = models.Model.of(module, params, baseline={1: -13.6}, scale=0.5)
    model(positions, species)                  # Σ_i c_Z + s · module: what training returns,
                                               # models.save/load write/read, the engine takes

The registry is lazy: a name maps to ``"module:Class"``, imported on first use (``create``,
``default_hypers``, ``load``, or the attribute, e.g. ``models.NequIP``), so ``import jbo.models``
and :func:`available` load no architecture (NequIP's jax-md and optax, e3nn) until one is used.
"""

from __future__ import annotations

from typing import Any

from jbo.models.io import load, save
from jbo.models.registry import (_LAZY, _REGISTRY, OPTIONAL, _cls, _resolve, available, create,
                                 default_hypers, energy_fn, init, installed, num_parameters)
from jbo.models.model import Model

__all__ = [
    "ZooModel",
    "available",
    "installed",
    "create",
    "default_hypers",
    "energy_fn",
    "init",
    "num_parameters",
    "save",
    "load",
    "Model",
]


def __getattr__(attr: str) -> Any:  # PEP 562: models.ZooModel, models.NequIP, ... on demand
    if attr in _LAZY:
        return _resolve(_LAZY[attr])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
