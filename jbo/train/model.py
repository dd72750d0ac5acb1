"""Build a zoo model for training, and load a trained one back from its checkpoints (as a
:class:`jbo.models.Model`, the type :func:`jbo.models.load` returns)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jbo import models
from jbo.models.io import legacy_atom_energies
from jbo.models.model import Model
from jbo.potential import cast_tree
from jbo.train.checkpoints import Checkpoints
from jbo.train.runs import check_belongs

__all__ = ["create_module", "init_params", "load_trained"]


def create_module(name: str, hypers: dict[str, Any], dtype: str | None = None):
    """``jbo.models.create(name, **hypers)``; ``dtype`` sets the model's compute dtype."""
    if name not in models.available():
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(models.available())}")
    hypers = dict(hypers)
    if dtype is not None and "dtype" in models.default_hypers(name):
        if hypers.setdefault("dtype", dtype) != dtype:
            raise ValueError(f"hypers dtype={hypers['dtype']!r} contradicts dtype={dtype!r}; "
                             "set only TrainConfig.dtype")
    return models.create(name, **hypers)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _init(module, key, positions, species, mask, dtype: str):
    return cast_tree(module.init(key, positions, species, mask), jnp.dtype(dtype))


def init_params(module, sample, seed: int, dtype) -> Any:
    """Initialise on the first structure of a padded ``sample`` batch
    (:class:`jbo.data.batch.Batch`); cast to ``dtype``."""
    dtype = jnp.dtype(dtype).name
    return _init(module, jax.random.PRNGKey(seed), jnp.asarray(sample.positions[0], dtype),
                 jnp.asarray(sample.species[0]), jnp.asarray(sample.mask[0]), dtype)


def load_trained(directory: str | Path, which: str = "best", module=None) -> Model:
    """Load ``<run>/checkpoints`` (or a checkpoint folder itself), or a model file written
    by :func:`jbo.models.save`.

    which: ``"best"`` (lowest validation MAE seen) or ``"latest"`` parameters.
    module: the flax module, needed only for models outside the ``jbo.models`` zoo.
    """
    directory = Path(directory)
    if directory.is_file():
        from jbo.models.io import load
        return load(directory)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    run_dir = directory.parent if directory.name == "checkpoints" else None
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {directory}; train with out_dir= first")
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    if not any(d.is_dir() and d.name.isdigit() for d in directory.iterdir()):
        # checked before Checkpoints(), which would create and tidy folders: readers write nothing
        raise FileNotFoundError(f"{run_dir or directory} holds no checkpoint (no step folders in "
                                f"{directory}); pass the --out folder of a `jbo train` run that "
                                "saved at least one step, or a model file")
    state, meta, step = Checkpoints(directory).restore()
    if run_dir is not None:
        check_belongs(run_dir, meta["config"], step)
    hypers, baseline = legacy_atom_energies(meta["hypers"], meta["scale"], meta["baseline"])
    if module is None:
        module = create_module(meta["model"], hypers, meta["dtype"])
    params = state["best_params" if which == "best" else "params"]
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return Model.of(module, params, baseline, meta["scale"], meta["dtype"], meta, step)
