"""Body-order (many-body expansion) decomposition of any energy function.

``body_orders(energy_fn, positions)`` evaluates ``energy_fn`` on subclusters in isolation (by
masks), Möbius-inverts the subset energies into interaction terms ε(S) and sums them by order:

* **exhaustive** (default): all 2^N − 1 subsets, batched evaluations (``lax.map`` over vmapped
  chunks; one compact ``[C(N,k), k]`` gather per subset size k), fast Möbius transform, O(N 2^N).
* **truncated** (``max_order=K``): the subsets of size <= K gathered into padded ``[M, K]``
  arrays; E^(k) from closed-form coefficients of the per-size energy sums; polynomial cost.
* **connected** (``cutoff=r``): only subsets connected in the cutoff graph (ε vanishes exactly on
  the others for a local model); a sparse inclusion–exclusion operator built on the host from the
  geometry (:func:`connected_plan`) and applied on device. Scales to hundreds of atoms.

All arithmetic after the model is float64, jittable and differentiable with respect to model
parameters and positions. Batches: ``positions[B, N, 3]`` with ``atom_mask[B, N]``.
Host potentials (ASE calculators, torch models: :mod:`jbo.adapters`) evaluate the same subsets
on the host instead; :mod:`jbo.assembly` turns either path's subset energies into the result.

One path: :func:`prepare` (:func:`jbo.request.checked`: every host check, once) →
:func:`evaluate` (no checks; jittable) → :func:`jbo.request.verify` (the result).
:func:`body_orders` is ``run(prepare(...))``; under ``jit``/``grad`` prepare outside and call
:func:`evaluate` inside (docs/engine.md).
"""

from __future__ import annotations

import inspect
import time
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jbo import geometry, lattice, tiers
from jbo.assembly import BodyOrders, assemble_family, assemble_lattice
from jbo.assembly import assemble_family_jit as _assemble_family_jit
from jbo.assembly import assemble_lattice_jit as _assemble_lattice_jit
from jbo.checks import check_contract, memory_limit
from jbo.host import HostPotential
from jbo.plans import SubsetPlan, connected_plan, truncated_plan
from jbo.potential import Potential
from jbo.request import DEFAULT_CHUNK, Request, checked, verify

__all__ = ["BodyOrders", "body_orders", "prepare", "evaluate", "Request", "check_contract",
           "connected_plan", "SubsetPlan", "memory_limit", "assemble_lattice", "assemble_family"]

Array = jax.Array
EnergyFn = Callable[[Array, Array, Array], Array]  # or a Potential (what the engine runs)


def body_orders(
    energy_fn: EnergyFn,
    positions,
    species=None,
    *,
    max_order: int | None = None,
    cutoff: float | None = None,
    forces: bool = False,
    atom_mask=None,
    terms: bool = True,
    plan: SubsetPlan | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    min_distance: float = geometry.MIN_DISTANCE,
    mesh: jax.sharding.Mesh | None = None,
    layout: str = "auto",
    check_contract: bool = True,
) -> BodyOrders:
    """Decompose the energy of one cluster or a padded batch into body orders.

    Args:
      energy_fn: a :class:`jbo.potential.Potential` (zoo, analytic and trained models are),
        or any ``(positions[N,3], species[N], mask[N] bool) -> scalar`` energy (eV) of the
        atoms where mask is True, as if the others did not exist (wrapped by
        :func:`jbo.potential.as_potential`). Its ``validate`` runs on concrete input. The
        potential is a traced argument of the compiled programs: new parameters of the same
        architecture reuse them. Or a :class:`jbo.host.HostPotential` (an ASE calculator or torch model through
        :mod:`jbo.adapters`): the same subsets are evaluated on the host, then assembled alike.
      positions: ``[N, 3]`` or ``[B, N, 3]`` (Å), or an ``ase.Atoms`` (or a list of them) in
        vacuum, which also gives species and padding.
      species: ``[N]`` / ``[B, N]`` atomic numbers (default: all hydrogen).
      max_order: highest order K (default N: the full expansion).
      cutoff: cutoff radius (Å) of a local model: only connected subsets are evaluated.
      forces: also return per-order forces ``[..., K, N, 3]``.
      atom_mask: ``[N]`` / ``[B, N]`` bool, False for padding atoms of a batch.
      terms: also return the interaction term of every evaluated subset.
      plan: a precomputed :func:`connected_plan` (needed under ``jit``/``grad`` w.r.t. positions).
      chunk_size: subset evaluations per vmapped chunk (bounds memory).
      min_distance: atoms closer than this (Å) are rejected as duplicates.
      mesh: split a batch of clusters over the first axis of this device mesh (data parallel;
        exhaustive and truncated modes). The batch is padded to a multiple of the axis size.
      layout: exhaustive mode only. ``"masks"`` evaluates every subset on N-wide masks (one
        model instance to compile: the fastest first call); ``"compact"`` on compact gathers in
        a few size buckets (~2-3x less work per call, ~3x the compile); ``"auto"`` (default)
        starts on ``"masks"`` and moves to ``"compact"`` once running has cost more than that
        compile would (:mod:`jbo.tiers`); under jit/grad it is ``"compact"``.
      check_contract: on concrete input, the first time an energy function is seen, check that
        it treats masked atoms as absent (:func:`jbo.checks.check_contract`); False skips it.

    :func:`prepare` (input, options, contract, memory, on the host) then
    :func:`run` (:func:`evaluate`, then :func:`jbo.request.verify` of a concrete result); a bad
    input or result raises an error naming the fix.
    """
    return run(checked(**locals(), per_call=None, orders=True))


def prepare(energy_fn, positions, species=None, *, per_call: int | None = None,
            orders: bool = True, **options) -> Request:
    """Every host check of a decomposition, once (:func:`jbo.request.checked`): a
    :class:`~jbo.request.Request` for :func:`evaluate` (under ``jit``/``grad``) or :func:`run`.

    Args:
      energy_fn, positions, species, options: as :func:`body_orders` (its signature is the
        one list of the options and their defaults).
      per_call: clusters per evaluation (:meth:`Request.calls`): bounds the memory checked.
      orders: False checks input and options for energies only (no subset memory or plan).
    """
    args = inspect.signature(body_orders).bind(energy_fn, positions, species, **options)
    args.apply_defaults()
    return checked(**args.arguments, per_call=per_call, orders=orders)


def run(req: Request, *, unbatch: bool = True) -> BodyOrders:
    """Evaluate a checked request and verify its result (finite, Σ_k E^(k) = E when K = N);
    a timed ``layout="auto"`` call books its time (:mod:`jbo.tiers`). ``unbatch=False`` keeps
    the ``[B]`` axis of a single-cluster request."""
    start = time.perf_counter()
    squeeze = unbatch and _squeezable(req, req.potential)
    result = _evaluate(req, req.potential, req.positions, squeeze)
    if req.tier is not None:
        jax.block_until_ready(result.per_order)
        tiers.record(*req.tier, time.perf_counter() - start)
    verify(req, result)
    return _unbatch(result) if unbatch and not req.batched and not squeeze else result


def evaluate(req: Request, potential=None, positions=None) -> BodyOrders:
    """The traced part of a decomposition: no checks, jittable and differentiable.

    Args:
      req: a :class:`Request` from :func:`prepare`, whose checks ran on concrete data.
      potential: the potential to evaluate (default ``req.potential``); another parameter
        set of the same architecture (e.g. traced under ``jax.grad``) is not checked again.
      positions: ``[N, 3]`` / ``[B, N, 3]`` like the request's (default: the checked ones),
        e.g. traced under ``jax.grad``; a connected request keeps the subset graph of the
        checked positions.
    Returns: :class:`BodyOrders` like :func:`body_orders` (unchecked: see :func:`run`).
    """
    pot = req.potential if potential is None else potential
    if pot is not req.potential and getattr(pot, "static", 0) != getattr(req.potential,
                                                                         "static", 1):
        raise ValueError("evaluate takes new parameters of the request's architecture, not "
                         "another potential: prepare a request for this one")
    pos = req.positions if positions is None else positions
    if not req.batched and positions is not None:
        pos = pos[None]
    if tuple(pos.shape) != tuple(req.positions.shape):
        raise ValueError(f"positions {tuple(pos.shape)} do not match the request's "
                         f"{tuple(req.positions.shape)}; prepare a request for this shape")
    squeeze = _squeezable(req, pot)
    result = _evaluate(req, pot, pos, squeeze)
    return result if req.batched or squeeze else _unbatch(result)


def _squeezable(req: Request, pot) -> bool:
    """Whether a single cluster is unbatched inside the jitted device program (saves the
    tiny programs of an eager ``x[0]`` per result field on a first call)."""
    return not req.batched and req.mesh is None and not isinstance(pot, HostPotential)


def _evaluate(req: Request, pot, pos, squeeze: bool = False) -> BodyOrders:
    """A request's subsets on device (or on the host), sharded over ``req.mesh`` if given;
    ``squeeze``: the device programs drop the batch axis of a single cluster."""
    forces, terms, chunk, layout, n = (req.forces, req.terms, req.chunk_size, req.layout,
                                       req.atom_mask.shape[1])
    if req.mode == "exhaustive":

        def body(pot, p, s, a):
            if isinstance(pot, HostPotential):
                e, g = pot.lattice_energies(p, s, a, forces)
                return _assemble_lattice_jit(jnp.asarray(e), _maybe(g), a, terms)
            return _exhaustive(pot, p, s, a, forces, terms, chunk, layout, squeeze)

    elif req.mode == "truncated":

        def body(pot, p, s, a):
            local = truncated_plan(p.shape[0], n, req.max_order)
            return _run_family(pot, p, s, a, local, forces, terms, chunk, squeeze)

    elif req.mode == "connected":

        def body(pot, p, s, a):
            return _run_family(pot, p, s, a, req.plan, forces, terms, chunk, squeeze)

    else:
        raise ValueError(f"a {req.mode!r} request has no body orders to evaluate")
    args = pot, pos, req.species, req.atom_mask
    return body(*args) if req.mesh is None else _sharded(req.mesh, body, *args)


def _maybe(x):
    return None if x is None else jnp.asarray(x)


def _run_family(pot, pos, spec, amask, plan, forces, want_terms, chunk, squeeze=False
                ) -> BodyOrders:
    """A plan's family through the jitted device path, or evaluated on the host."""
    if not isinstance(pot, HostPotential):
        return _family(pot, pos, spec, amask, plan, forces, want_terms, chunk, squeeze)
    e, g, total = pot.family_energies(pos, spec, amask, plan, forces)
    return _assemble_family_jit(jnp.asarray(e), _maybe(g), jnp.asarray(total), plan, amask,
                                want_terms)


def _energy(pot: Potential, grads: bool):
    """(pos, spec, mask) -> E (float64; 0 for an empty subset) [, ∂E/∂pos]."""

    def one(p, s, m):
        e = jnp.asarray(pot.energy(p, s, m))
        if jnp.iscomplexobj(e):  # checked while tracing: free at run time
            raise TypeError(f"energy_fn must return a real energy (eV), got dtype {e.dtype}")
        e = e.astype(jnp.float64)
        if e.shape != ():
            raise ValueError(f"energy_fn must return a scalar energy, got shape {e.shape}")
        return jnp.where(m.any(), e, 0.0)

    return jax.value_and_grad(one) if grads else one


def _lattice_compact(f, pos, spec, amask, forces: bool, chunk: int):
    """E(S) ``[B, 2^N]`` (and ∂E/∂x ``[B, 2^N, N, 3]``) from compact gathers of the subsets.

    Subset sizes are grouped into a few buckets (:func:`jbo.lattice.size_buckets`); a bucket of
    width W evaluates its subsets on ``[chunk, W]`` gathers, the slots beyond a subset's own
    members masked and parked far away. One model instance per bucket (the row count is padded
    to a multiple of ``chunk``): a few programs to compile instead of one (or two) per size.
    """
    n_clusters, n = amask.shape
    size = 1 << n
    rows = lattice.combinations_up_to(n, n)
    sizes = lattice.subset_sizes(rows)
    energies = jnp.zeros((n_clusters, size))
    grads = jnp.zeros((n_clusters, size, n, 3)) if forces else None
    lo = 1
    for width in lattice.size_buckets(n):
        idx = rows[(sizes >= lo) & (sizes <= width), :width]  # [C, W] static, −1 padded
        lo = width + 1
        bits = (np.where(idx >= 0, 1, 0) << np.maximum(idx, 0).astype(np.int64)).sum(1)
        count = len(idx)
        total = n_clusters * count
        batch = min(chunk, total)
        steps = -(-total // batch)
        members = jnp.asarray(idx)
        park = 1e3 * jnp.arange(1, width + 1, dtype=pos.dtype)[:, None] * jnp.eye(3)[0]

        def one(i, members=members, count=count, park=park):
            b, c = i // count, i % count
            at = members[c]
            safe = jnp.maximum(at, 0)
            m = (at >= 0) & amask[b][safe]
            # absent slots far apart from everything: no model ever sees r = 0 or a neighbour
            p = jnp.where((at >= 0)[:, None], pos[b][safe], pos[b][safe[0]] + park)
            return f(p, spec[b][safe], m)

        # padded to whole chunks (the extra rows repeat row 0 and are dropped): one instance
        i = jnp.arange(steps * batch) % total
        out = jax.lax.map(one, i, batch_size=batch)
        e = (out[0] if forces else out)[:total].reshape(n_clusters, count)
        energies = energies.at[:, bits].set(e)
        if forces:
            g = out[1][:total].reshape(n_clusters, count, width, 3)
            slot = np.where(idx >= 0, idx, n)  # padding slots fall off the end (dropped)
            grads = grads.at[:, bits[:, None], slot].set(g, mode="drop")
    return energies, grads


def _lattice_masks(f, pos, spec, amask, forces: bool, chunk: int):
    """Same as :func:`_lattice_compact` with one model instance over N-wide subset masks.

    Each cluster's ``2^N`` masks are evaluated in vmapped chunks inside which its positions
    are shared, not batched, so whatever the model computes from the geometry alone (pair
    vectors, spherical harmonics, radial bases) is traced, compiled and run once per chunk
    rather than once per subset. Clusters run one after another (``lax.map``), ``chunk // 2^N``
    at a time when their lattices are smaller than a chunk (padded with copies of cluster 0).
    """
    n_clusters, n = amask.shape
    size = 1 << n
    bits = jnp.arange(n)
    batch = min(chunk, size)
    s = jnp.arange(-(-size // batch) * batch) % size  # whole chunks: one model instance
    group = min(max(1, chunk // size), n_clusters)
    take = jnp.arange(-(-n_clusters // group) * group) % n_clusters

    def cluster(x):
        p, z, a = x
        return jax.lax.map(lambda i: f(p, z, ((i >> bits) & 1).astype(bool) & a), s,
                           batch_size=batch)

    out = jax.lax.map(cluster, (pos[take], spec[take], amask[take]), batch_size=group)
    if not forces:
        return out[:n_clusters, :size], None
    return out[0][:n_clusters, :size], out[1][:n_clusters, :size]


LAYOUTS = {"compact": _lattice_compact, "masks": _lattice_masks}


# the potential is traced (its params are leaves): static are only shapes and options
@partial(jax.jit, static_argnums=(4, 5, 6, 7, 8))
def _exhaustive(pot: Potential, pos, spec, amask, forces, want_terms, chunk, layout,
                squeeze=False) -> BodyOrders:
    """All subsets (evaluated in the given layout), fast Möbius transform, per-order sums
    (of the one cluster of a batch of one when ``squeeze``)."""
    energies, grads = LAYOUTS[layout](_energy(pot, forces), pos, spec, amask, forces, chunk)
    result = assemble_lattice(energies, grads, amask, want_terms)
    return _unbatch(result) if squeeze else result


@partial(jax.jit, static_argnums=(5, 6, 7, 8))
def _family(pot: Potential, pos, spec, amask, plan: SubsetPlan, forces, want_terms, chunk,
            squeeze=False):
    """Evaluate a subset family and contract it with the plan's order weights (of the one
    cluster of a batch of one when ``squeeze``)."""
    idx = jnp.asarray(plan.idx)
    safe = jnp.maximum(idx, 0)
    flat_pos = pos.reshape(-1, 3)
    sub_mask = (idx >= 0) & amask.reshape(-1)[safe]
    f = _energy(pot, forces)
    # Padding slots are absent atoms; park them far apart so no model ever sees r = 0.
    park = 1e3 * jnp.arange(1, idx.shape[1] + 1, dtype=flat_pos.dtype)[:, None] * jnp.eye(3)[0]
    sub_pos = jnp.where(sub_mask[..., None], flat_pos[safe], flat_pos[safe[:, :1]] + park)
    out = jax.lax.map(
        lambda a: f(*a),
        (sub_pos, spec.reshape(-1)[safe], sub_mask),
        batch_size=max(1, min(chunk, idx.shape[0])),
    )
    total = jax.vmap(_energy(pot, False))(pos, spec, amask)
    energies, grads = out if forces else (out, None)
    result = assemble_family(energies, grads, total, plan, amask, want_terms)
    return _unbatch(result) if squeeze else result


def _sharded(mesh: jax.sharding.Mesh, run, pot, pos, spec, amask) -> BodyOrders:
    """``run`` on each device's share of the batch (``shard_map`` over the mesh's first axis);
    the potential (its parameters) is replicated."""
    from jax.sharding import PartitionSpec as P

    axis = mesh.axis_names[0]
    n_clusters = pos.shape[0]
    pad = (-n_clusters) % mesh.shape[axis]
    if pad:  # repeat the first cluster; its copies are cut off again below

        def pad_batch(x):
            return jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)])

        pos, spec, amask = pad_batch(pos), pad_batch(spec), pad_batch(amask)
    shape = jax.eval_shape(run, pot, pos[:1], spec[:1], amask[:1])
    split = jax.tree.map(lambda _: P(axis), shape)
    out_specs = split.replace(subsets=P(), cluster=None)
    mapped = jax.shard_map(run, mesh=mesh, in_specs=(P(),) + (P(axis),) * 3,
                           out_specs=out_specs)
    placed = jax.device_put((pos, spec, amask), jax.sharding.NamedSharding(mesh, P(axis)))
    pot = jax.device_put(pot, jax.sharding.NamedSharding(mesh, P()))
    result = jax.jit(mapped)(pot, *placed)
    if not pad:
        return result
    whole = jax.sharding.NamedSharding(mesh, P())
    return jax.tree.map(
        lambda x: jax.device_put(x, whole)[:n_clusters], result.replace(subsets=None)
    ).replace(subsets=result.subsets)


def _unbatch(r: BodyOrders) -> BodyOrders:
    def first(x):
        return None if x is None else x[0]

    return r.replace(
        per_order=r.per_order[0],
        truncated=r.truncated[0],
        total=r.total[0],
        terms=r.terms if r.mode == "connected" else first(r.terms),
        forces=first(r.forces),
    )
