"""The one trained-model type of jbo: :class:`Model`, a JAX pytree whose leaves are the params.

A model's energy of a structure is

    E(x) = Σ_i c_{Z_i} + s · module(params, x)          (eV)

with a composition baseline c_Z (eV/atom, a pure one-body term) and a scale s (eV): both leave
the body-order structure of the network untouched apart from the order-1 shift. Training
(:mod:`jbo.train`) returns one (``TrainResult.model``), :func:`jbo.models.save` writes one and
:func:`jbo.models.load` reads one back; the engine, ``jbo.analysis``, the ASE calculator and
``jbo decompose`` take one.

    model = models.load("soap.jbo")
    model(positions, species)                    # eV (host checks, then one jitted program)
    model.energy_and_forces(positions, species)  # (eV, eV/Å), float64
    model.replace(params=new)                    # same architecture: compiled programs reused
    jax.tree.map(f, model)                       # maps over the params only

As a pytree, ``params`` are the only leaves; the flax module, the baseline (a ``[119]`` tuple,
eV by atomic number), s and the compute dtype are static, compared by value. The provenance
(``meta``, ``step``) rides along but is no part of that comparison: two files of one
architecture and baseline share every compiled program. The engine takes ``model.potential`` (a :class:`jbo.potential.Potential`
that carries c and s as leaves), so its programs are keyed on the architecture alone.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jbo.potential import Bound, Potential, cast_tree, contract_tested

__all__ = ["Model", "baseline_table", "UNITS", "N_ELEMENTS"]

N_ELEMENTS = 119  # atomic numbers 0..118 index the baseline
#: units of every model's inputs and outputs (written into model files)
UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"}


def baseline_table(baseline: Mapping[int, float] | Any | None) -> tuple[float, ...]:
    """The composition baseline as ``[119]`` eV per atom by atomic number (0 where absent),
    from ``{Z: eV}`` (keys may be strings, as in checkpoint metadata), a sequence by atomic
    number, or None (all 0)."""
    table = np.zeros(N_ELEMENTS)
    if isinstance(baseline, Mapping):
        for z, c in baseline.items():
            table[int(z)] = float(c)
    elif baseline is not None:
        arr = np.asarray(baseline, np.float64).ravel()
        if arr.size > N_ELEMENTS:
            raise ValueError(f"the baseline covers {arr.size} atomic numbers; at most "
                             f"{N_ELEMENTS} (0..118)")
        table[:arr.size] = arr
    return tuple(table.tolist())


class Meta(Mapping):
    """Read-only provenance (a JSON-able dict), hashable so a :class:`Model` can be static."""

    def __init__(self, data: Mapping | None = None):
        self._data = dict(data or {})
        self._hash = hash(json.dumps(self._data, sort_keys=True, default=str))

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and self._data == dict(other)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Meta({self._data!r})"


@contract_tested
def _model_energy(leaves, positions, species, mask, *, module, dtype):
    """Σ_{present i} c[Z_i] + s · module(params cast to dtype, positions in dtype), float64."""
    base = jnp.sum(jnp.where(mask, leaves["baseline"][species], 0.0))
    params, positions = cast_tree(leaves["params"], dtype), jnp.asarray(positions, dtype)
    return base + leaves["scale"] * jnp.asarray(module.apply(params, positions, species, mask),
                                                jnp.float64)


@functools.lru_cache(maxsize=64)
def _constants(baseline: tuple[float, ...], scale: float) -> tuple[jax.Array, jax.Array]:
    """The baseline table and s as device arrays (concrete even when asked inside a trace)."""
    with jax.ensure_compile_time_eval():
        return jnp.asarray(np.asarray(baseline)), jnp.asarray(scale, jnp.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A trained (or fresh) model; see the module docstring.

    Attributes:
      module: the flax module, ``module.apply(params, positions[N,3], species[N], mask[N]) ->
        scalar``; static. Its ``cutoff`` (Å), ``is_local`` and ``species`` are the model's.
      params: the module's parameters (the pytree leaves).
      baseline: ``[119]`` eV per atom by atomic number (:func:`baseline_table`); static.
      scale: s in eV; static.
      dtype: the compute dtype of training (``module.dtype`` for zoo models); the engine's
        :attr:`potential` computes in float64 (a float64 twin of a float32 zoo module).
      meta: provenance (a checkpoint's run metadata, a file's header); static.
      step: the checkpoint's step, -1 for a model file or a training result; static.
    """

    module: Any
    params: Any
    baseline: tuple[float, ...] = (0.0,) * N_ELEMENTS
    scale: float = 1.0
    dtype: str = "float64"
    meta: Meta = Meta()
    step: int = -1

    def __post_init__(self):  # static metadata only: never touches the (traced) params
        object.__setattr__(self, "baseline", baseline_table(self.baseline))
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "dtype", jnp.dtype(self.dtype).name)
        if not isinstance(self.meta, Meta):
            object.__setattr__(self, "meta", Meta(self.meta))

    @classmethod
    def of(cls, module, params, baseline=None, scale: float = 1.0, dtype=None, meta=None,
           step: int = -1) -> "Model":
        """A model; ``dtype`` defaults to ``module.dtype`` (float64 when it has none)."""
        dtype = getattr(module, "dtype", "float64") if dtype is None else dtype
        return cls(module, params, baseline, scale, dtype, meta, step)

    def _key(self) -> tuple:  # what computing depends on (not the provenance)
        return (self.module, self.baseline, self.scale, self.dtype)

    def __eq__(self, other) -> bool:  # the same static part and the very same params
        return type(other) is Model and self._key() == other._key() \
            and self.params is other.params

    def __hash__(self) -> int:  # by value: ``model.replace(params=None)`` is a jit static
        return hash(self._key())

    def replace(self, **changes) -> "Model":
        """A copy with ``changes`` (e.g. ``params=``): same static part, same programs."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ static metadata
    @property
    def cutoff(self) -> float | None:
        rc = getattr(self.module, "cutoff", None)
        return None if rc is None else float(rc)

    @property
    def is_local(self) -> bool:
        return bool(getattr(self.module, "is_local", False))

    @property
    def species(self) -> tuple[int, ...] | None:
        known = getattr(self.module, "species", None)
        return None if known is None else tuple(int(z) for z in known)

    @property
    def units(self) -> dict[str, str]:
        return dict(UNITS)

    @property
    def static(self):
        """Everything but the params (hashable): equal for programs that can be reused."""
        return jax.tree_util.tree_structure(self)

    # ------------------------------------------------------------------ energies
    def potential_in(self, dtype) -> Potential:
        """The energy as a :class:`~jbo.potential.Potential` whose leaves are the params, the
        baseline table and s; the module computes in ``dtype`` (float64: its float64 twin)."""
        dtype = jnp.dtype(dtype)
        module = self.module
        if dtype == jnp.float64 and isinstance(getattr(module, "dtype", None), str) \
                and module.dtype != "float64":
            module = module.clone(dtype="float64")  # same parameter tree, float64 compute
        table, scale = _constants(self.baseline, self.scale)
        field = getattr(module, "receptive_field", self.cutoff)
        return Potential(Bound.of(_model_energy, module=module, dtype=dtype.name),
                         {"params": self.params, "baseline": table, "scale": scale},
                         cutoff=self.cutoff, is_local=self.is_local, species=self.species,
                         receptive_field=field)

    @property
    def potential(self) -> Potential:
        """The engine's view (float64: subset energies feed alternating sums)."""
        return self.potential_in(jnp.float64)

    def validate(self, positions, species, mask) -> None:
        """Refuse present atoms of elements the model does not know (concrete inputs)."""
        self.potential.validate(positions, species, mask)

    def __call__(self, positions, species, mask=None):
        """Energy (eV), float64; ``mask`` defaults to all atoms present."""
        return self.potential(positions, species, mask)

    def energy_and_forces(self, positions, species, mask=None):
        """(energy eV, forces ``[N,3]`` eV/Å), float64."""
        return self.potential.energy_and_forces(positions, species, mask)

    def __repr__(self) -> str:
        return (f"Model({type(self.module).__name__}, cutoff={self.cutoff}, scale={self.scale:g}"
                f", dtype={self.dtype}, step={self.step})")


class _Provenance:
    """``(meta, step)`` in a model's treedef, equal to every other: provenance never keys a
    compiled program (inside a trace a model may carry the first traced model's provenance;
    nothing computed reads it)."""

    __slots__ = ("meta", "step")

    def __init__(self, meta: Meta, step: int):
        self.meta, self.step = meta, step

    def __eq__(self, other) -> bool:
        return isinstance(other, _Provenance)

    def __hash__(self) -> int:
        return 0


def _flatten(m: Model):
    return (m.params,), (m.module, m.baseline, m.scale, m.dtype, _Provenance(m.meta, m.step))


def _unflatten(aux, children) -> Model:
    module, baseline, scale, dtype, prov = aux
    return Model(module, children[0], baseline, scale, dtype, prov.meta, prov.step)


jax.tree_util.register_pytree_node(Model, _flatten, _unflatten)
