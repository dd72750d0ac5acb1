"""The zoo registry: model names -> classes (imported on first use), hyperparameters,
creation and initialisation. Re-exported by :mod:`jbo.models` (see its docstring).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jbo.potential import Potential, from_module

if TYPE_CHECKING:
    from jbo.models.base import ZooModel

__all__ = ["available", "installed", "create", "default_hypers", "energy_fn", "init",
           "num_parameters"]

#: model name -> "module:Class", imported on first use (:func:`_cls`)
_REGISTRY: dict[str, str] = {
    "soap_bpnn": "jbo.models.soap_bpnn:SoapBPNN",
    "linear_ace": "jbo.models.linear_ace:LinearACE",
    "pet": "jbo.models.pet:PET",
    "mace": "jbo.models.mace:MACE",
    "nequip": "jbo.models.nequip:NequIP",
    "mlip_mace": "jbo.models.mlip_mace:MlipMACE",  # optional dependency: pip install 'jbo[mlip]'
}
#: the classes importable as attributes of this package (``models.ZooModel``, ``models.MACE``)
_LAZY: dict[str, str] = {
    "ZooModel": "jbo.models.base:ZooModel",
    **{target.split(":")[1]: target for target in _REGISTRY.values()},
}

_RESERVED = {"parent", "name"}


def available() -> list[str]:
    """Names of the registered models."""
    return sorted(_REGISTRY)


#: zoo models whose network comes from an optional package (the extra of that name)
OPTIONAL: dict[str, str] = {"mlip_mace": "mlip"}


def installed() -> list[str]:
    """:func:`available` minus the models whose optional package is not importable."""
    import importlib.util

    return [m for m in available()
            if m not in OPTIONAL or importlib.util.find_spec(OPTIONAL[m]) is not None]


def _resolve(target: str) -> Any:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def _cls(name: str) -> type[ZooModel]:
    """The class of model ``name``, its module imported now (the first time)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {available()}")
    return _resolve(_REGISTRY[name])


def default_hypers(name: str) -> dict[str, Any]:
    """The hyperparameters of model ``name`` and their default values."""
    out = {}
    for f in dataclasses.fields(_cls(name)):
        if f.name in _RESERVED or not f.init:
            continue
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


def _normalise(key: str, value: Any) -> Any:
    """Make hyper values hashable and canonical (lists -> tuples, dtypes -> names)."""
    if key == "dtype":
        name = jnp.dtype(value).name
        if name not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {value!r}")
        return name
    if isinstance(value, (list, np.ndarray)):
        return tuple(np.asarray(value).tolist())
    return value


def create(name: str, **hypers) -> ZooModel:
    """Build model ``name`` with ``hypers`` overriding :func:`default_hypers`.

    Raises:
        ValueError: unknown model name, unknown hyperparameter, or inconsistent values.
    """
    cls = _cls(name)
    valid = default_hypers(name)
    unknown = sorted(set(hypers) - set(valid))
    if "atom_energies" in unknown:
        raise ValueError("atom_energies is no zoo hyperparameter: the composition baseline is the "
                         "model's (jbo.models.Model.of(module, params, baseline={Z: eV}); "
                         "training fits it: TrainConfig.baseline, baseline_from_atoms)")
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown} for {name!r}; valid: {sorted(valid)}")
    hypers = {k: _normalise(k, v) for k, v in hypers.items()}
    species = tuple(int(z) for z in hypers.get("species", valid["species"]))
    if len(species) == 0 or len(set(species)) != len(species) or min(species) < 1:
        raise ValueError(f"species must be distinct atomic numbers >= 1, got {species}")
    hypers["species"] = species
    for key in sorted(set(valid) - {"species", "dtype"}):
        _check_hyper(name, key, hypers.get(key, valid[key]), valid[key], cls.choices.get(key))
    return cls(**hypers)


#: Integer hyperparameters that may be 0 (angular orders: l = 0 alone is a valid model).
_MAY_BE_ZERO = re.compile(r"(^|_)(angular|ell|l)$")


def _check_hyper(model: str, key: str, value: Any, default: Any,
                 choices: tuple[str, ...] | None = None) -> None:
    """Same type as the default; floats finite and > 0; counts >= 1 (angular orders >= 0);
    strings one of ``choices``."""
    where = f"{model} hyperparameter {key}={value!r}"
    if isinstance(default, str):
        if not isinstance(value, str) or (choices and value not in choices):
            raise ValueError(f"{where} must be one of {list(choices or ())}")
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be True or False")
    elif isinstance(default, Integral):
        low = 0 if _MAY_BE_ZERO.search(key) else 1
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(f"{where} must be an int >= {low}")
    elif isinstance(default, Real):
        if isinstance(value, bool) or not isinstance(value, Real) or not (
                math.isfinite(value) and value > 0):
            raise ValueError(f"{where} must be a finite number > 0 (Å for cutoffs)")
    elif isinstance(default, tuple) and all(isinstance(v, Integral) for v in default):
        if not isinstance(value, tuple) or not all(
                isinstance(v, Integral) and not isinstance(v, bool) and v >= 1 for v in value):
            raise ValueError(f"{where} must be a list of ints >= 1 (layer widths)")


def init(module: ZooModel, key: jax.Array | int = 0, n_atoms: int = 3):
    """Initialise parameters on a small dummy cluster; every float leaf in ``module.dtype``.

    Args:
        key: a PRNG key, or an int seed (then the RBG generator is used: it compiles several
            times faster than threefry, which dominates the cost of compiling ``init``).
    """
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key), impl="unsafe_rbg")
    dt = jnp.dtype(module.dtype)
    pos = jnp.asarray(np.linspace(0.0, 1.0, 3 * n_atoms).reshape(n_atoms, 3), dt)
    z = jnp.full((n_atoms,), module.species[0], jnp.int32)
    # init runs once: on CPU, compile it without backend optimisation (about 2x faster);
    # compiler options are only allowed on a top-level jit (not when init is itself traced)
    top_level = not isinstance(key, jax.core.Tracer)
    cpu = jax.default_backend() == "cpu"
    opts = {"xla_backend_optimization_level": 0} if cpu and top_level else None
    params = jax.jit(module.init, compiler_options=opts)(key, pos, z, jnp.ones((n_atoms,), bool))
    return jax.tree_util.tree_map(
        lambda x: x.astype(dt) if jnp.issubdtype(x.dtype, jnp.floating) else x, params
    )


def num_parameters(params) -> int:
    """Total number of scalar parameters."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


def energy_fn(module: ZooModel, params) -> Potential:
    """A zoo module and its parameters as a :class:`jbo.potential.Potential` (params the
    leaves; the module, ``cutoff``, ``is_local``, ``species``, ``receptive_field`` static)."""
    return from_module(module, params)
