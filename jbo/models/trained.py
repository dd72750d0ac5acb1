"""The trained-model type: a zoo (or any flax) module, its parameters, the composition
baseline and the energy scale, as one potential.

The trained energy of a structure is

    E(x) = Σ_i c_{Z_i} + s · module(x)          (eV)

with a composition baseline c_Z (eV/atom, a pure one-body term) and a scale s (eV): both leave
the body-order structure of the model untouched apart from the order-1 shift.
:func:`jbo.models.load` returns a :class:`Trained`; training (:mod:`jbo.train`) builds one.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jbo.potential import Potential, from_module, scaled, with_baseline

__all__ = ["EnergyModel", "energy_model", "Trained", "baseline_array"]

Params = Any


def baseline_array(base: dict[int, float], z_max: int = 118) -> np.ndarray:
    """``[z_max+1]`` eV per atom indexed by atomic number (0 for absent elements)."""
    arr = np.zeros(z_max + 1)
    for z, c in base.items():
        arr[int(z)] = c
    return arr


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """A flax module plus the fixed energy baseline/scale; hashable by value, so jitted
    functions taking it as a static argument are compiled once per distinct model.

    module: ``module.apply(params, positions[N,3], species[N], mask[N]) -> scalar``.
    baseline: ``[Zmax+1]`` eV per atom of element Z (a tuple). scale: s in eV.
    dtype: model compute dtype name. module64: a float64 twin of ``module`` (same parameter
    tree) used for subset energies, or None when ``module`` already computes in float64.
    """

    module: Any
    baseline: tuple[float, ...]
    scale: float
    dtype: str = "float64"
    cutoff: float | None = None
    is_local: bool = False
    module64: Any = None

    def potential(self, params: Params, dtype=jnp.float64) -> Potential:
        """The trained energy ``Σ_i c_{Z_i} + s · module(params)`` as a :class:`Potential`
        (``params`` its leaves, with the baseline table and s). ``dtype``: the module's compute
        dtype (float64 by default: subset energies feed alternating sums)."""
        dtype = jnp.dtype(dtype)
        module = self.module64 if dtype == jnp.float64 and self.module64 is not None \
            else self.module
        core = dataclasses.replace(from_module(module, params, dtype), cutoff=self.cutoff,
                                   is_local=self.is_local)
        return with_baseline(scaled(core, self.scale), np.asarray(self.baseline))


def _float64_twin(module):
    """A float64 twin of ``module`` (same parameter tree) for subset energies, or None."""
    if isinstance(getattr(module, "dtype", None), str) and module.dtype != "float64":
        return module.clone(dtype="float64")
    return None


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
