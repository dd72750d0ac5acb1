"""From subset energies to a :class:`BodyOrders` result: the one assembler of the engine.

Whoever evaluated the subclusters (the jitted device path of :mod:`jbo.decompose` or a host
potential of :mod:`jbo.host`), the same functions turn their energies (and gradients) into
interaction terms, per-order energies and per-order forces:

* :func:`assemble_lattice`: all 2^N subsets by bitmask, fast Möbius transform;
* :func:`assemble_family`: a :class:`~jbo.plans.SubsetPlan`'s subsets, its order weights and
  sparse Möbius operator.

Both are pure and jittable (float64).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jbo import lattice
from jbo.plans import SubsetPlan

__all__ = ["BodyOrders", "assemble_lattice", "assemble_family"]

Array = jax.Array


@struct.dataclass
class BodyOrders:
    """Result of :func:`jbo.decompose.body_orders`. Leading ``[B]`` axes only for batched input.

    Attributes:
      per_order: ``[B, K]`` E^(1)..E^(K) (eV).
      truncated: ``[B, K]`` E_MBE(1)..E_MBE(K) (eV), cumulative sums of ``per_order``.
      total: ``[B]`` energy of the whole cluster (eV).
      terms: interaction terms ε(S) (eV): exhaustive ``[B, 2^N]`` indexed by bitmask;
        truncated ``[B, M]`` aligned with ``subsets``; connected ``[M]`` (all clusters), with
        ``cluster[M]`` naming each term's cluster. None when not requested.
      subsets: exhaustive ``[2^N]`` bitmasks; otherwise ``[M, K]`` atom indices (−1 padded).
      forces: ``[B, K, N, 3]`` −∂E^(k)/∂positions (eV/Å), or None.
      cluster: ``[M]`` cluster index of each subset (connected mode), else None.
      mode: ``"exhaustive"``, ``"truncated"`` or ``"connected"``.
    """

    per_order: Array
    truncated: Array
    total: Array
    terms: Array | None
    subsets: Array
    forces: Array | None = None
    cluster: Array | None = None
    mode: str = struct.field(pytree_node=False, default="exhaustive")

    @property
    def error(self) -> Array:
        """Truncation error E − E_MBE(K) (eV)."""
        return self.total - self.truncated[..., -1]

    @property
    def orders(self) -> np.ndarray:
        """Body order |S| of each entry of ``terms`` (``[2^N]`` or ``[M]``)."""
        if self.mode == "exhaustive":
            return lattice.popcount(np.asarray(self.subsets))
        return lattice.subset_sizes(np.asarray(self.subsets))

    def atoms(self, j: int) -> tuple[int, ...]:
        """Atom indices of the subset behind ``terms[..., j]``."""
        s = np.asarray(self.subsets)
        if self.mode == "exhaustive":
            return tuple(lattice.members(s[j]))
        return tuple(int(i) for i in s[j] if i >= 0)


def assemble_lattice(energies, grads, amask, want_terms: bool = True) -> BodyOrders:
    """BodyOrders from the energies of all subsets, however they were evaluated.

    Args:
      energies: ``[B, 2^N]`` E(S) (eV) indexed by bitmask (entry 0, the empty set, is 0).
      grads: ``[B, 2^N, N, 3]`` ∂E(S)/∂positions (eV/Å), zero outside S, or None.
      amask: ``[B, N]`` real atoms; subsets holding padding atoms get ε = 0.
    """
    n = amask.shape[1]
    size = 1 << n
    # subsets holding padding atoms have ε = 0 exactly (their energies repeat smaller subsets')
    real_bits = jnp.sum(jnp.where(amask, 1 << jnp.arange(n, dtype=jnp.int64), 0), axis=-1)
    inside = (jnp.arange(size, dtype=jnp.int64)[None, :] & ~real_bits[:, None]) == 0  # [B, 2^N]
    eps = jnp.where(inside, lattice.mobius(energies, axis=1), 0.0)
    # a non-finite term (a host potential's on_error="nan") spoils only the orders it is in
    finite = jnp.isfinite(eps)
    per_order = lattice.order_sums(jnp.where(finite, eps, 0.0), n, axis=1)
    spoiled = lattice.order_sums((~finite).astype(eps.dtype), n, axis=1) > 0
    per_order = jnp.where(spoiled, jnp.nan, per_order)
    force = None
    if grads is not None:
        eps_grad = jnp.where(inside[..., None, None], lattice.mobius(grads, axis=1), 0.0)
        force = -lattice.order_sums(eps_grad, n, axis=1)
    return BodyOrders(
        per_order=per_order,
        truncated=jnp.cumsum(per_order, axis=-1),
        total=energies[:, -1],
        terms=eps if want_terms else None,
        subsets=jnp.arange(size),
        forces=force,
        mode="exhaustive",
    )


def assemble_family(energies, grads, total, plan: SubsetPlan, amask, want_terms: bool = True):
    """BodyOrders from the energies of a plan's subsets, however they were evaluated.

    Args:
      energies: ``[M]`` E(T) (eV) of the subsets ``plan.idx`` (padding members absent).
      grads: ``[M, K, 3]`` ∂E(T)/∂(positions of T's members, in ``plan.idx`` order), or None.
      total: ``[B]`` energy of each whole cluster (eV).
      amask: ``[B, N]`` real atoms.
    """
    n_clusters, n = amask.shape
    idx = jnp.asarray(plan.idx)
    safe = jnp.maximum(idx, 0)
    weights = plan.weights(amask)  # [M, K]: E^(k) = Σ_T W[T, k] E(T) per cluster
    cluster = jnp.asarray(plan.cluster)
    # a NaN energy (a host potential's on_error="nan") spoils only the orders it enters
    per_order = jax.ops.segment_sum(jnp.where(weights != 0, weights * energies[:, None], 0.0),
                                    cluster, n_clusters)
    force = None
    if grads is not None:
        sub_mask = (idx >= 0) & amask.reshape(-1)[safe]
        grads = jnp.where(sub_mask[..., None], grads, 0.0)  # [M, K, 3]
        force = jnp.stack(
            [
                -jnp.zeros((n_clusters * n, 3)).at[safe].add(weights[:, k, None, None] * grads)
                for k in range(plan.max_order)
            ]
        )  # [K, B*N, 3]
        force = force.reshape(plan.max_order, n_clusters, n, 3).transpose(1, 0, 2, 3)
    eps = plan.interaction_terms(energies, amask) if want_terms else None
    return BodyOrders(
        per_order=per_order,
        truncated=jnp.cumsum(per_order, axis=-1),
        total=total,
        terms=eps,
        subsets=plan.local_idx(),
        forces=force,
        cluster=None if plan.mode == "truncated" else cluster,
        mode=plan.mode,
    )


# the host path's assembly: one compiled program per shape (eager ops would compile one by one)
assemble_lattice_jit = jax.jit(assemble_lattice, static_argnums=3)
assemble_family_jit = jax.jit(assemble_family, static_argnums=5)
