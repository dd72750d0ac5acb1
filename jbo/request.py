"""The engine's one check step: :func:`checked` turns a call into a checked :class:`Request`.

Every decomposition runs **prepare → evaluate → verify**:

* :func:`jbo.decompose.prepare` → :func:`checked` (host, once per call) adapts the input
  (``ase.Atoms``, arrays), checks it (:func:`jbo.geometry.validate`: shapes, dtypes, finite
  positions, no duplicate atoms), the options (:func:`jbo.checks.options`), the potential on
  concrete input (:func:`jbo.checks.concrete_input`: its ``validate`` such as known species,
  the masking contract, a connected plan's geometry), the memory the chosen mode needs, and
  picks the mode, the exhaustive layout and the subset plan. Its result is a frozen
  :class:`Request`.
* :func:`jbo.decompose.evaluate` runs a request (device, or host for a
  :class:`~jbo.host.HostPotential`); it checks nothing and is jittable/differentiable.
* :func:`verify` checks a concrete result: finite, and Σ_k E^(k) = E when K = N.

:func:`jbo.decompose.body_orders`, :func:`jbo.analysis.decompose_records` and ``jbo
decompose`` all pass through :func:`checked` and :func:`verify`; :func:`stack` pads
several structures into one batch without converting anything before it is checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from jbo import adapters, checks, geometry, lattice, memory, tiers
from jbo.checks import memory_limit
from jbo.host import HostPotential
from jbo.plans import SubsetPlan, connected_plan, plan_bytes
from jbo.potential import as_potential

__all__ = ["Request", "checked", "verify", "stack", "DEFAULT_CHUNK"]

#: Evaluations per vmapped chunk inside ``lax.map``.
DEFAULT_CHUNK = 256


@dataclasses.dataclass(frozen=True, eq=False)
class Request:
    """A checked decomposition (from :func:`jbo.decompose.prepare`): what
    :func:`jbo.decompose.evaluate` runs, nothing left to check.

    Attributes:
      potential: the :class:`~jbo.potential.Potential` (or host potential) to evaluate.
      positions, species, atom_mask: ``[B, N, 3]`` (Å), ``[B, N]`` int32, ``[B, N]`` bool.
      batched: whether the caller passed a batch (else results drop the ``B`` axis).
      mode: ``"exhaustive"``, ``"truncated"``, ``"connected"``, or ``"total"`` (energies only).
      max_order: K; cutoff: Å (connected mode) or None; plan: the connected subset plan.
      forces, terms, chunk_size, layout, mesh: :func:`jbo.decompose.body_orders`' options,
        ``layout`` resolved to ``"masks"``/``"compact"`` for the exhaustive mode.
      tier: the :mod:`jbo.tiers` key of a timed ``layout="auto"`` call, else None.
      concrete: the input is concrete (values were checked; results are checked by
        :func:`verify`); False under ``jit``/``grad``.
      per_call: clusters per evaluation (:meth:`calls`); None: all at once.
    """

    potential: Any
    positions: Any
    species: Any
    atom_mask: Any
    batched: bool
    mode: str
    max_order: int
    cutoff: float | None
    plan: SubsetPlan | None
    forces: bool
    terms: bool
    chunk_size: int
    layout: str
    mesh: Any
    tier: tuple | None
    concrete: bool
    per_call: int | None = None

    @property
    def host(self) -> bool:
        """Evaluated on the host (an ASE calculator or torch model), outside JAX."""
        return isinstance(self.potential, HostPotential)

    def calls(self) -> Iterator[tuple[int, Request]]:
        """``(first cluster, request)`` per evaluation of at most ``per_call`` clusters, each
        padded to ``per_call`` with copies of its first cluster (one compiled shape)."""
        n_clusters = self.atom_mask.shape[0]
        size = self.per_call or n_clusters
        for lo in range(0, n_clusters, size):
            take = np.arange(lo, lo + size)
            take[take >= n_clusters] = lo
            part = dataclasses.replace(self, positions=self.positions[take],
                                       species=self.species[take],
                                       atom_mask=self.atom_mask[take], per_call=None)
            if self.mode == "exhaustive":  # the tier may have moved on since prepare
                layout, tier = _layout(part, self.layout if self.tier is None else "auto")
                part = dataclasses.replace(part, layout=layout, tier=tier)
            yield lo, part


def checked(energy_fn, positions, species, *, max_order, cutoff, forces, atom_mask, terms,
            plan, chunk_size, min_distance, mesh, layout, check_contract, per_call, orders
            ) -> Request:
    """Every host check of a decomposition, once: a :class:`Request` to evaluate.

    Arguments as :func:`jbo.decompose.body_orders` (all given: :func:`jbo.decompose.prepare`
    fills in body_orders' defaults), plus ``per_call``, clusters per evaluation
    (:meth:`Request.calls`), which bounds the memory checked, and ``orders``: False checks input
    and options for energies only (no subset memory or plan). On tracers (under ``jit``/``grad``)
    shapes and options are checked, values cannot be.
    Raises: ValueError/TypeError (input, options), ContractError, MemoryError naming the fix.
    """
    positions, species, atom_mask = adapters.structure_input(positions, species, atom_mask)
    pos, spec, amask, batched = geometry.validate(positions, species, atom_mask,
                                                  min_distance=min_distance)
    n_clusters, n = amask.shape
    concrete = geometry.is_concrete(pos, spec, amask)
    _check_host(energy_fn, concrete, mesh)
    k, cutoff = checks.options(energy_fn, n, max_order=max_order, cutoff=cutoff, plan=plan,
                               chunk_size=chunk_size, layout=layout)
    if per_call is not None:
        per_call = min(checks.as_int("per_call", per_call), n_clusters)
        if plan is not None or cutoff is not None:
            raise ValueError("per_call splits a batch, but a connected plan is built for the "
                             "whole batch: decompose without per_call, or without cutoff")
    host_pot = isinstance(energy_fn, HostPotential)
    pot = energy_fn if host_pot else as_potential(energy_fn)
    if concrete:
        checks.concrete_input(pot, pos, spec, amask, plan=plan,
                              contract=check_contract and not host_pot)
    calls = per_call or n_clusters
    mode = ("total" if not orders else "exhaustive" if plan is None and cutoff is None
            and max_order is None else "truncated" if plan is None and cutoff is None
            else "connected")
    req = Request(pot, pos, spec, amask, batched, mode, k, cutoff, plan, bool(forces),
                  bool(terms), int(chunk_size), layout, mesh, None, concrete, per_call)
    if mode == "exhaustive":  # the memory and layout of one call of per_call clusters
        head = req if per_call is None else dataclasses.replace(
            req, positions=pos[:calls], species=spec[:calls], atom_mask=amask[:calls])
        layout, tier = _layout(head, layout)
        return dataclasses.replace(req, layout=layout, tier=tier)
    if mode == "truncated":
        need = plan_bytes(calls * lattice.n_subsets_up_to(n, k), k, terms, forces)
        if need > memory_limit():
            raise MemoryError(memory.too_big(calls, n, k, need, forces))
    elif mode == "connected":
        return dataclasses.replace(req, plan=_connected(pos, amask, cutoff, k, plan, concrete,
                                                        mesh, terms))
    return req


def _layout(req: Request, layout: str) -> tuple[str, tuple | None]:
    """The exhaustive layout (and the :mod:`jbo.tiers` key of a timed ``"auto"`` call) for
    ``req``'s clusters, refused with MemoryError when it does not fit."""
    n_clusters, n = req.atom_mask.shape
    forces, terms = req.forces, req.terms
    tier = None
    if layout == "auto":
        layout = "compact"
        if req.concrete and req.mesh is None and not req.host:
            key = (req.potential.static, req.positions.shape, req.species.dtype, forces, terms,
                   req.chunk_size)
            layout = tiers.choose(key)
            if layout == "compact" and memory.exhaustive_bytes(
                    n_clusters, n, forces, terms, layout) > memory_limit():
                layout = "masks"  # what fits beats what is fast
            tier = key, layout
    memory.check_exhaustive_fits(n_clusters, n, forces, terms, layout)
    return layout, tier


def _connected(pos, amask, cutoff, k, plan, concrete, mesh, terms) -> SubsetPlan:
    """The connected subset plan: built from concrete positions, or the caller's, checked."""
    n_clusters, n = amask.shape
    if plan is None:
        if not concrete:
            raise ValueError(
                "connected mode builds its subset graph from concrete positions; under "
                "jit/grad pass plan=connected_plan(positions, cutoff, max_order) built outside"
            )
        plan = connected_plan(pos, cutoff, k, amask, memory_limit(), with_operator=terms)
    if plan.n_atoms != n or plan.n_clusters != n_clusters or plan.max_order != k:
        raise ValueError(
            f"plan was built for {plan.n_clusters} cluster(s) of {plan.n_atoms} atoms up to "
            f"order {plan.max_order}, not {n_clusters} of {n} up to {k}; rebuild it"
        )
    if mesh is not None:
        raise ValueError(
            "mesh= shards the exhaustive and truncated modes; a connected plan is built per "
            "geometry, so decompose each shard's clusters with their own plan instead"
        )
    return plan


def _check_host(energy_fn, concrete: bool, mesh) -> None:
    if not isinstance(energy_fn, HostPotential):
        return
    if not concrete:
        raise ValueError(f"{energy_fn} evaluates on the host, outside JAX: call body_orders "
                         "without jit/grad (forces=True gives the per-order forces)")
    if mesh is not None:
        raise ValueError(f"mesh= shards JAX models over devices; {energy_fn} runs on the host: "
                         "use its workers= for parallel evaluation instead")


def verify(req: Request, result) -> None:
    """The result checks of a concrete call (batched ``result``; nothing under jit): finite
    (unless a host potential asked for NaN terms with ``on_error="nan"``), and with K = N
    Σ_k E^(k) equal to the total. Raises FloatingPointError / :class:`checks.ExpansionError`."""
    if not req.concrete or isinstance(result.per_order, jax.core.Tracer):
        return
    if not (req.host and req.potential.on_error == "nan"):
        checks.finite_result(result, result.atoms)
    if req.max_order == req.atom_mask.shape[1]:  # the whole expansion
        checks.full_expansion(result, req.cutoff, checks.model_eps(req.potential))


def stack(structures: Sequence[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[(positions[n_i, 3], species[n_i]), ...]`` as one padded batch ``(positions[B, N, 3],
    species[B, N], atom_mask[B, N])`` for :func:`checked`, N = max n_i; padding atoms at the
    origin with species 0, masked.

    Each structure's shapes, dtypes and atomic numbers are checked first, by the same
    :func:`jbo.geometry.as_batch` (same messages) as a single cluster given to ``body_orders``,
    so nothing is converted (float species, int positions) before it is checked.
    """
    parts = []
    for p, s in structures:
        pos, spec, _, batched = geometry.as_batch(p, s)
        if batched:
            raise ValueError(f"each structure's positions must have shape [N, 3] (Å), got "
                             f"{tuple(np.shape(p))}")
        parts.append((pos[0], spec[0]))
    n_max = max(p.shape[0] for p, _ in parts)
    pos = np.zeros((len(parts), n_max, 3), np.result_type(*[p.dtype for p, _ in parts]))
    spec = np.zeros((len(parts), n_max), np.int32)
    mask = np.zeros((len(parts), n_max), bool)
    for b, (p, s) in enumerate(parts):
        pos[b, :len(p)], spec[b, :len(s)], mask[b, :len(s)] = p, s, True
    return pos, spec, mask
