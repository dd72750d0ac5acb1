"""The one energy-function type of jbo: :class:`Potential`, a JAX pytree.

A potential is ``E(positions[N,3] Å, species[N], mask[N]) -> scalar eV``, the energy of the
atoms where ``mask`` is True *as if the others did not exist* (docs/CONTRACTS.md). As a pytree
its ``params`` (any pytree: network weights, analytic constants, baselines) are the leaves, and
everything else is static metadata compared by value: the ``apply`` function, ``cutoff`` (Å),
``is_local``, ``species`` and ``receptive_field``. The engine takes a potential as an ordinary
traced argument of its jitted programs, so a second parameter set of the same architecture
reuses the compiled program, and parameters are never baked in as constants.

    pot = Potential(apply, params, cutoff=2.5, is_local=True)   # apply(params, pos, z, mask)
    pot(positions, species)                                     # eV (host check + jitted call)
    pot.energy(positions, species, mask)                        # traced: inside jit/vmap/grad
    scaled(pot, 0.5)                                            # s · pot, a Potential
    as_potential(any_callable)                                  # wrapped, non-local unless told

``apply`` must be hashable and compare by value (a module-level function, or :class:`Bound`:
a function with static constants, e.g. a flax module) so equal architectures share programs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable

import jax
import jax.numpy as jnp

from jbo import geometry

__all__ = ["Potential", "Bound", "as_potential", "from_module", "scaled", "combine", "cast_tree",
           "contract_tested", "is_contract_tested"]

Array = jax.Array
Params = Any


#: ``apply`` functions and zoo module classes whose masking contract the test suite establishes
#: exactly (tests/test_contract_tested.py covers each one; :func:`contract_tested`).
_CONTRACT_TESTED: set = set()


def contract_tested(obj):
    """Decorator: the masking contract of this ``apply`` function (or flax module class, exact
    class only, not its subclasses) is proven by jbo's tests, so the engine's run-time check
    (:func:`jbo.checks.contract_once`), whose compile is a large part of a first call, skips
    potentials built only of such parts. Mark nothing that tests/test_contract_tested.py does
    not cover: that test fails on an uncovered mark."""
    _CONTRACT_TESTED.add(obj)
    return obj


def is_contract_tested(apply: Callable) -> bool:
    """True when ``apply`` is built only of :func:`contract_tested` parts: a marked function, or
    a :class:`Bound` of one whose static callables (``inner``, ``parts``, ``module``: its exact
    class) are marked too. Anything else (a user's function) is checked at run time."""
    if not isinstance(apply, Bound):  # apply (and Bound's statics) are hashable: jit statics
        return apply in _CONTRACT_TESTED
    if apply.fn not in _CONTRACT_TESTED:
        return False
    for key, value in apply.static:
        if key == "module":
            if type(value) not in _CONTRACT_TESTED:
                return False
        elif key == "parts":
            if not all(is_contract_tested(v) for v in value):
                return False
        elif callable(value) and not is_contract_tested(value):
            return False
    return True


@dataclasses.dataclass(frozen=True)
class Bound:
    """``fn(params, positions, species, mask, **static)`` with its static keyword constants.

    Hashable and compared by value (unlike ``functools.partial``, and unlike a flax module's
    bound ``apply``, which compares its module by identity), so it can be static in a jit.
    """

    fn: Callable
    static: tuple[tuple[str, Hashable], ...] = ()

    @classmethod
    def of(cls, fn: Callable, **static) -> "Bound":
        return cls(fn, tuple(sorted(static.items())))

    def __call__(self, params, positions, species, mask):
        return self.fn(params, positions, species, mask, **dict(self.static))


@dataclasses.dataclass(frozen=True, eq=False)
class Potential:
    """An energy function with explicit parameters (see module docstring).

    Attributes:
      apply: ``apply(params, positions[N,3], species[N], mask[N]) -> scalar`` (eV); static.
      params: pytree of parameters (the leaves).
      cutoff: interaction cutoff (Å), or None (infinite range).
      is_local: True when ε(S) = 0 for every S disconnected in the cutoff graph.
      species: atomic numbers the potential knows (others refused on concrete input), or None.
      receptive_field: distance (Å) beyond which two fragments cannot feel each other, or None.
    """

    apply: Callable
    params: Params = None
    cutoff: float | None = None
    is_local: bool = False
    species: tuple[int, ...] | None = None
    receptive_field: float | None = None

    def __post_init__(self):  # metadata only (static): free on the hot path
        object.__setattr__(self, "cutoff", geometry.check_cutoff(self.cutoff, "cutoff"))
        object.__setattr__(self, "receptive_field",
                           geometry.check_cutoff(self.receptive_field, "receptive_field"))

    def energy(self, positions, species, mask) -> Array:
        """The energy (eV), traceable: no host checks. ``mask[N]`` bool is required."""
        return self.apply(self.params, positions, species, mask)

    def validate(self, positions, species, mask) -> None:
        """:func:`jbo.geometry.validate` with this potential's species (shapes always, values on
        concrete input), plus a wrapped callable's own ``validate``."""
        geometry.validate(positions, species, mask, known_species=self.species)
        own = getattr(self.apply, "validate", None)
        if own is not None:
            own(positions, species, mask)

    def __call__(self, positions, species, mask=None) -> Array:
        """Energy (eV) after :meth:`validate`; ``mask`` defaults to all atoms present."""
        mask = jnp.ones(jnp.shape(species), bool) if mask is None else mask
        self.validate(positions, species, mask)
        return _energy(self, positions, species, mask)

    def energy_and_forces(self, positions, species, mask=None) -> tuple[Array, Array]:
        """(energy eV, forces ``[N,3]`` eV/Å) in float64."""
        mask = jnp.ones(jnp.shape(species), bool) if mask is None else mask
        self.validate(positions, species, mask)
        e, g = _energy_and_grad(self, jnp.asarray(positions, jnp.float64), species, mask)
        return e, -g

    @property
    def static(self):
        """Everything but the parameters (hashable): one contract check, one program each."""
        return jax.tree_util.tree_structure(self)

    def __repr__(self) -> str:
        fn = getattr(self.apply, "fn", self.apply)
        name = getattr(fn, "__name__", type(fn).__name__)
        return f"Potential({name}, cutoff={self.cutoff}, is_local={self.is_local})"


jax.tree_util.register_dataclass(
    Potential, data_fields=["params"],
    meta_fields=["apply", "cutoff", "is_local", "species", "receptive_field"])


@jax.jit
def _energy(pot: Potential, positions, species, mask):
    return pot.energy(positions, species, mask)


@jax.jit
def _energy_and_grad(pot: Potential, positions, species, mask):
    return jax.value_and_grad(
        lambda x: jnp.asarray(pot.energy(x, species, mask), jnp.float64))(positions)


# ------------------------------------------------------------------ wrapping plain callables

@dataclasses.dataclass(frozen=True)
class _Plain:
    """A plain ``fn(positions, species, mask)`` as an ``apply``; hashed as ``fn`` is."""

    fn: Callable

    def __call__(self, params, positions, species, mask):
        return self.fn(positions, species, mask)

    def validate(self, positions, species, mask) -> None:
        own = getattr(self.fn, "validate", None)
        if own is not None:
            own(positions, species, mask)


def as_potential(fn, cutoff: float | None = None, is_local: bool | None = None) -> Potential:
    """``fn`` as a :class:`Potential`.

    A Potential is returned as is; an object with a ``potential`` attribute (a
    :class:`jbo.models.Model`) gives that; any other callable ``fn(positions, species, mask) -> eV`` is wrapped (static,
    hashed as ``fn`` is, so the same function reuses its programs), with ``cutoff`` and
    ``is_local`` from the arguments or else ``fn``'s attributes, and non-local by default.
    """
    if isinstance(fn, Potential):
        pot = fn
    elif isinstance(getattr(fn, "potential", None), Potential):
        pot = fn.potential
    elif callable(fn):
        if hasattr(fn, "lattice_energies"):
            raise TypeError(f"{fn} evaluates on the host; pass it to body_orders directly")
        rc = getattr(fn, "cutoff", None) if cutoff is None else cutoff
        local = getattr(fn, "is_local", False) if is_local is None else is_local
        return Potential(_Plain(fn), None, cutoff=rc,
                         is_local=bool(local))
    else:
        raise TypeError(f"expected an energy function (positions, species, mask) -> eV, got "
                        f"{type(fn).__name__}")
    if cutoff is None and is_local is None:
        return pot
    return dataclasses.replace(pot, cutoff=pot.cutoff if cutoff is None else cutoff,
                               is_local=pot.is_local if is_local is None else bool(is_local))


# ------------------------------------------------------------------ flax modules

def cast_tree(tree: Params, dtype) -> Params:
    """Cast the floating leaves of a pytree to ``dtype`` (integers untouched)."""
    def f(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree_util.tree_map(f, tree)


@contract_tested
def _module_energy(params, positions, species, mask, *, module, dtype=None):
    if dtype is not None:
        params, positions = cast_tree(params, dtype), jnp.asarray(positions, dtype)
    return module.apply(params, positions, species, mask)


def from_module(module, params, dtype: str | None = None) -> Potential:
    """A flax module ``module.apply(params, positions, species, mask) -> eV`` (hashable, e.g. a
    :mod:`jbo.models` zoo model) with its parameters. Metadata are read from the module
    (``cutoff``, ``is_local``, ``species``, ``receptive_field``; absent: None / non-local).
    ``dtype``: cast parameters and positions to it first (None: as given)."""
    cutoff = getattr(module, "cutoff", None)
    species = getattr(module, "species", None)
    field = getattr(module, "receptive_field", cutoff)
    return Potential(
        Bound.of(_module_energy, module=module, dtype=None if dtype is None else
                 jnp.dtype(dtype).name), params,
        cutoff=cutoff,
        is_local=bool(getattr(module, "is_local", False)),
        species=None if species is None else tuple(int(z) for z in species),
        receptive_field=field)


# ------------------------------------------------------------------ wrappers

@contract_tested
def _scaled(params, positions, species, mask, *, inner):
    return params["scale"] * jnp.asarray(inner(params["inner"], positions, species, mask),
                                         jnp.float64)


def scaled(pot: Potential, scale: float) -> Potential:
    """``E = s · pot`` (eV, float64); ``s`` is a leaf (``params["scale"]``)."""
    pot = as_potential(pot)
    params = {"inner": pot.params, "scale": jnp.asarray(scale, jnp.float64)}
    return dataclasses.replace(pot, apply=Bound.of(_scaled, inner=pot.apply), params=params)


@contract_tested
def _sum(params, positions, species, mask, *, parts):
    return sum(f(p, positions, species, mask) for f, p in zip(parts, params))


def combine(*pots) -> Potential:
    """Sum of potentials; local (with the largest cutoff) only if every part is local."""
    pots = [as_potential(p) for p in pots]
    cutoffs = [p.cutoff for p in pots]
    local = all(p.is_local for p in pots) and None not in cutoffs
    known = [set(p.species) for p in pots if p.species is not None]
    return Potential(Bound.of(_sum, parts=tuple(p.apply for p in pots)),
                     tuple(p.params for p in pots),
                     cutoff=None if None in cutoffs else max(cutoffs), is_local=local,
                     species=tuple(sorted(set.intersection(*known))) if known else None)
