"""Save a zoo model as one small portable file, and load it back as a ready potential.

    from jbo import models
    models.save("soap.jbo", result.model)           # a jbo.models.Model, or module + params
    model = models.load("soap.jbo")                 # no training config or database needed
    model(positions, species)                       # eV; model.energy_and_forces(...), .cutoff

The file is msgpack (``flax.serialization``): format name and version, jbo version, registry
name and class of the architecture, its hyperparameters (JSON), the parameters, the
composition baseline (eV/atom by atomic number), the scale s (eV), species and units. The
energy is ``Σ_i baseline[Z_i] + s · module.apply(params, ...)`` (eV, float64), as in training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from jbo.models import registry
from jbo.models.model import UNITS, Model, baseline_table

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION"]

FORMAT = "jbo-model"
FORMAT_VERSION = 1
_KEYS = ("format", "format_version", "jbo_version", "model", "class", "hypers", "params",
         "baseline", "scale", "species", "units")


def _registry_name(module) -> str:
    for name in registry.available():
        if type(module) is registry._cls(name):
            return name
    raise ValueError(f"only jbo.models zoo models can be saved, got {type(module).__name__}; "
                     "register the class in jbo.models or save its params yourself")


def _hypers(module, name: str) -> dict[str, Any]:
    return {k: getattr(module, k) for k in registry.default_hypers(name)}


def save(path: str | Path, model: Model | Any, params=None, *,
         metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` (one file) and return the path.

    model: a :class:`jbo.models.Model` (e.g. ``TrainResult.model``: the best parameters), or a
      zoo module with ``params`` (baseline 0, scale 1). metadata: JSON-able extras.
    """
    import jbo
    if not isinstance(model, Model):
        if params is None:
            raise TypeError(f"save(path, model) takes a jbo.models.Model (a training result's "
                            f"is result.model), or save(path, module, params); got "
                            f"{type(model).__name__} without params")
        model = Model.of(model, params)
    elif params is not None:
        raise TypeError("save(path, model, params): a Model holds its params; pass "
                        "model.replace(params=...) instead")
    module = model.module
    name = _registry_name(module)
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "jbo_version": jbo.__version__,
        "model": name, "class": type(module).__name__,
        "hypers": json.dumps(_hypers(module, name)),
        "params": flax.serialization.to_state_dict(jax.device_get(model.params)),
        "baseline": np.asarray(model.baseline, np.float64), "scale": model.scale,
        "species": np.asarray(module.species, np.int64), "units": json.dumps(UNITS),
        "metadata": json.dumps(metadata or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flax.serialization.msgpack_serialize(payload))
    return path


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}; write one with jbo.models.save")
    try:
        data = flax.serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises several types on foreign bytes
        raise ValueError(f"{path} is not a jbo model file ({type(err).__name__}); write one "
                         "with jbo.models.save") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a jbo model file (no format={FORMAT!r} header); write "
                         "one with jbo.models.save")
    version = int(data.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by jbo {data.get('jbo_version', '?')} in model "
                         f"format {version}, newer than this jbo reads ({FORMAT_VERSION}); "
                         "upgrade jbo")
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} lacks keys {missing}: a truncated or hand-edited model file; "
                         "save the model again")
    return data


def legacy_atom_energies(hypers: dict[str, Any], scale: float, baseline
                         ) -> tuple[dict[str, Any], tuple[float, ...]]:
    """Hypers of a file or checkpoint written while zoo models had an ``atom_energies``
    setting (eV per species, inside the module, so scaled by s), without it, and the baseline
    ``[119]`` (eV by Z) with it folded in: c_Z + s · e_Z. Empty (the default): unchanged."""
    hypers = dict(hypers)
    e0 = hypers.pop("atom_energies", None) or ()
    table = baseline_table(baseline)
    if not any(e0):
        return hypers, table
    species = hypers.get("species") or ()
    if len(e0) != len(species):
        raise ValueError(f"atom_energies has {len(e0)} entries for {len(species)} species")
    folded = list(table)
    for z, e in zip(species, e0):
        folded[int(z)] += scale * float(e)
    return hypers, tuple(folded)


def _check_finite(path: Path, params, baseline, scale) -> None:
    """Refuse a file whose scale, baseline or a parameter holds NaN/inf, naming which."""
    if not np.isfinite(np.asarray(scale, np.float64)).all():
        raise ValueError(f"{path}: the energy scale s is {scale} (not finite); the file is "
                         "damaged or was saved from a diverged run: save the model again")
    base = np.asarray(baseline, np.float64)
    if not np.isfinite(base).all():
        z = int(np.flatnonzero(~np.isfinite(base))[0])
        raise ValueError(f"{path}: the baseline energy of atomic number {z} is {base[z]} (not "
                         "finite); the file is damaged: save the model again")
    for keys, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
            name = "/".join(str(getattr(k, "key", k)) for k in keys)
            raise ValueError(f"{path}: parameter {name} holds {int((~np.isfinite(arr)).sum())} "
                             f"non-finite value(s) of {arr.size} (NaN/inf): the model diverged "
                             "or the file is damaged; save a finite model")


def load(path: str | Path, model: str | None = None) -> Model:
    """Load a file written by :func:`save` as a :class:`jbo.models.Model` (Σ_i c_Z + s · module;
    callable ``(positions[N,3], species[N], mask[N]=None) -> eV``, float64, species checked;
    its ``meta`` holds the file's header, ``step`` is -1).

    model: the registry name the file must hold (e.g. ``"soap_bpnn"``), or None for any.
    Raises ValueError for a foreign, truncated or newer-format file, a different model than
    ``model``, parameters that do not fit the stored architecture, or a NaN/inf scale,
    baseline or parameter (named).
    """
    path = Path(path)
    data = _read(path)
    name = data["model"]
    if model is not None and name != model:
        raise ValueError(f"{path} holds a {name!r} model, not {model!r}")
    if name not in registry.available() or registry._cls(name).__name__ != data["class"]:
        raise ValueError(f"{path} holds model {name!r} of class {data['class']!r}, which this "
                         f"jbo does not have (available: {registry.available()})")
    scale = float(data["scale"])
    hypers, baseline = legacy_atom_energies(json.loads(data["hypers"]), scale, data["baseline"])
    try:
        module = registry.create(name, **hypers)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the hyperparameters in {path} do not fit a {name!r} model ({err}); "
                         "another model class or edited hypers?") from err
    template = flax.serialization.to_state_dict(
        jax.eval_shape(lambda: registry.init(module, 0)))
    got, want = (jax.tree_util.tree_structure(t) for t in (data["params"], template))
    shapes = [np.shape(a) == tuple(b.shape) for a, b in zip(
        jax.tree_util.tree_leaves(data["params"]), jax.tree_util.tree_leaves(template))]
    if got != want or not all(shapes):
        raise ValueError(f"the parameters in {path} do not fit a {name!r} model with its stored "
                         "hyperparameters (another model class or edited hypers?)")
    params = jax.tree_util.tree_map(
        lambda a, t: np.asarray(a, t.dtype), data["params"], template)
    _check_finite(path, params, data["baseline"], data["scale"])
    meta = {k: data[k] for k in ("format_version", "jbo_version", "model", "scale")}
    meta.update(hypers=hypers, dtype=module.dtype, units=json.loads(data["units"]),
                metadata=json.loads(data.get("metadata", "{}")), path=str(path))
    return Model.of(module, params, baseline, scale, meta=meta)
