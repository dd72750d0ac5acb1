"""Build a zoo model for training, and load a trained one back from its checkpoints."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jbo.potential import Potential, cast_tree
from jbo.train.checkpoints import Checkpoints
from jbo.train.dataset import baseline_array
from jbo.train.losses import EnergyModel
from jbo.train.runs import check_belongs

__all__ = ["create_module", "init_params", "energy_model", "Trained", "load_trained"]


def create_module(name: str, hypers: dict[str, Any], dtype: str | None = None):
    """``jbo.models.create(name, **hypers)``; ``dtype`` sets the model's compute dtype."""
    try:
        from jbo import models
    except ImportError as err:
        raise ImportError("jbo.models is not installed; pass module= explicitly") from err
    if name not in models.available():
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(models.available())}")
    hypers = dict(hypers)
    if dtype is not None and "dtype" in models.default_hypers(name):
        if hypers.setdefault("dtype", dtype) != dtype:
            raise ValueError(f"hypers dtype={hypers['dtype']!r} contradicts dtype={dtype!r}; "
                             "set only TrainConfig.dtype")
    return models.create(name, **hypers)


def _float64_twin(module):
    """A float64 twin of ``module`` (same parameter tree) for subset energies, or None."""
    if isinstance(getattr(module, "dtype", None), str) and module.dtype != "float64":
        return module.clone(dtype="float64")
    return None


@functools.partial(jax.jit, static_argnums=(0, 5))
def _init(module, key, positions, species, mask, dtype: str):
    return cast_tree(module.init(key, positions, species, mask), jnp.dtype(dtype))


def init_params(module, sample, seed: int, dtype) -> Any:
    """Initialise on the first structure of a padded ``sample`` batch
    (:class:`jbo.train.dataset.Batch`); cast to ``dtype``."""
    dtype = jnp.dtype(dtype).name
    return _init(module, jax.random.PRNGKey(seed), jnp.asarray(sample.positions[0], dtype),
                 jnp.asarray(sample.species[0]), jnp.asarray(sample.mask[0]), dtype)


def _locality(module) -> tuple[float | None, bool]:
    cutoff = getattr(module, "cutoff", None)
    return (None if cutoff is None else float(cutoff)), bool(getattr(module, "is_local", False))


def energy_model(module, params, baseline: dict[int, float], scale: float, dtype) -> EnergyModel:
    """The :class:`EnergyModel` (baseline + s · module) of a trained or fresh model."""
    cutoff, local = _locality(module)
    return EnergyModel(module=module, baseline=tuple(baseline_array(baseline).tolist()),
                       scale=float(scale), dtype=jnp.dtype(dtype).name, cutoff=cutoff,
                       is_local=local, module64=_float64_twin(module))


@dataclasses.dataclass(eq=False)
class Trained:
    """A trained model: its :class:`~jbo.potential.Potential` (``potential``: baseline +
    s · module, float64; the params its leaves) and where it came from (``meta``; ``step`` is
    the checkpoint's step, -1 for a model file). ``trained(positions[N,3], species[N],
    mask[N]=None)`` is its energy (eV); the engine, the ASE calculator and ``jbo decompose``
    take it (they use ``trained.potential``)."""

    module: Any
    params: Any
    model: EnergyModel
    meta: dict[str, Any]
    step: int

    @functools.cached_property
    def potential(self) -> Potential:
        # built with concrete leaves even when first asked for inside jit/vmap: a cached
        # Potential holding that trace's tracers would leak into every later call
        with jax.ensure_compile_time_eval():
            return self.model.potential(self.params)

    @property
    def cutoff(self) -> float | None:
        return self.potential.cutoff

    @property
    def is_local(self) -> bool:
        return self.potential.is_local

    @property
    def species(self) -> tuple[int, ...] | None:
        return self.potential.species

    def validate(self, positions, species, mask) -> None:
        """Refuse present atoms of elements the model does not know (concrete inputs)."""
        self.potential.validate(positions, species, mask)

    def __call__(self, positions, species, mask=None):
        return self.potential(positions, species, mask)

    def energy_and_forces(self, positions, species, mask=None):
        """(energy eV, forces ``[N,3]`` eV/Å), float64."""
        return self.potential.energy_and_forces(positions, species, mask)


def load_trained(directory: str | Path, which: str = "best", module=None) -> Trained:
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
    if module is None:
        module = create_module(meta["model"], meta["hypers"], meta["dtype"])
    dtype = jnp.dtype(meta["dtype"])
    params = state["best_params" if which == "best" else "params"]
    params = jax.tree_util.tree_map(jnp.asarray, params)
    base = {int(z): float(c) for z, c in meta["baseline"].items()}
    return Trained(module, params, energy_model(module, params, base, meta["scale"], dtype),
                   meta, step)
