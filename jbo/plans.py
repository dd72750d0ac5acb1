"""Subset plans: which subclusters to evaluate and how to contract their energies.

A :class:`SubsetPlan` lists subsets of a batch of ``B`` clusters of ``N`` (padded) atoms as rows
``idx[M, K]`` of *flat* atom indices (``b * N + i``, −1 padded) with their cluster ``cluster[M]``,
plus the linear maps from subset energies E(T) to

* per-order energies: E^(k)[b] = Σ_{T in b} W[T, k] E(T)  (``weights``), and
* interaction terms: ε(S) = Σ_T A[S, T] E(T), A a sparse ±1 matrix (``interaction_terms``).

Truncated plans (all subsets of size <= K) depend only on shapes and get W in closed form on
device from the number of real atoms per cluster; connected plans are built on the host from a
geometry's cutoff graph. Plans are pytrees, so they can be passed into ``jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jbo import geometry, lattice


@struct.dataclass
class SubsetPlan:
    """Subsets to evaluate for a batch and the operators that contract their energies.

    Attributes:
      idx: ``[M, K]`` int32 flat atom indices (b * N + i), −1 padded.
      cluster: ``[M]`` int32 cluster of each subset.
      sizes: ``[M]`` int32 number of members.
      rows, cols, coef: COO entries of the Möbius operator ε[rows] += coef * E[cols].
      order_weights: ``[M, K]`` float64 W[T, k] (connected plans); None for truncated plans,
        whose weights follow from the closed form and the real-atom counts.
      graph_hash: ``[B]`` int64 fingerprints of the cutoff graphs the plan was built from
        (connected plans; :func:`jbo.geometry.graph_hash`), to refuse it for other positions.
    """

    idx: jax.Array
    cluster: jax.Array
    sizes: jax.Array
    rows: jax.Array | None
    cols: jax.Array | None
    coef: jax.Array | None
    order_weights: jax.Array | None
    n_clusters: int = struct.field(pytree_node=False)
    n_atoms: int = struct.field(pytree_node=False)
    max_order: int = struct.field(pytree_node=False)
    mode: str = struct.field(pytree_node=False)
    cutoff: float | None = struct.field(pytree_node=False, default=None)
    graph_hash: jax.Array | None = None

    @property
    def n_subsets(self) -> int:
        return int(self.idx.shape[0])

    def weights(self, atom_mask: jax.Array) -> jax.Array:
        """``[M, K]`` order weights W[T, k] for a batch with real atoms ``atom_mask[B, N]``."""
        if self.order_weights is not None:
            return jnp.asarray(self.order_weights)
        n_real = atom_mask.sum(-1)[self.cluster]  # [M]
        w = lattice.order_weights(n_real, self.sizes, self.max_order, table_size=self.n_atoms)
        return jnp.where(self.real_subsets(atom_mask)[:, None], w, 0.0)

    def real_subsets(self, atom_mask: jax.Array) -> jax.Array:
        """``[M]`` bool: every member of the subset is a real (non-padding) atom."""
        idx = jnp.asarray(self.idx)
        member_real = atom_mask.reshape(-1)[jnp.maximum(idx, 0)] | (idx < 0)
        return member_real.all(-1)

    def interaction_terms(self, energies: jax.Array, atom_mask: jax.Array) -> jax.Array:
        """ε(S) for every planned subset from E(T) ``[M]``; ``[B, M/B]`` for truncated plans."""
        if self.rows is None:
            raise ValueError("this plan was built without its Möbius operator (terms=False)")
        eps = jax.ops.segment_sum(self.coef * energies[self.cols], self.rows, self.n_subsets)
        if self.mode == "truncated":
            eps = jnp.where(self.real_subsets(atom_mask), eps, 0.0)
            return eps.reshape(self.n_clusters, -1)
        return eps

    def local_idx(self) -> jax.Array:
        """Subset rows as atom indices within their own cluster (−1 padded)."""
        idx = jnp.asarray(self.idx)
        local = jnp.where(idx >= 0, idx - self.n_atoms * jnp.asarray(self.cluster)[:, None], -1)
        if self.mode == "truncated":
            return local[: self.n_subsets // self.n_clusters]
        return local


def plan_bytes(n_subsets: int, max_order: int, terms: bool, forces: bool) -> int:
    """Rough peak bytes to evaluate and contract ``n_subsets`` subsets of size <= max_order."""
    k = max_order
    per = 8 + 8 * k + 4 * k + 24 * k + (24 * k if forces else 0) + 24 * (1 << k)
    return 2 * n_subsets * per


def _replicate(arrays, n_clusters: int, n_atoms: int, n_sub: int):
    """Stack a single-cluster family for ``n_clusters`` clusters with flat indices."""
    idx, rows, cols, coef = arrays
    b = np.arange(n_clusters)
    flat = np.where(idx[None] >= 0, idx[None] + n_atoms * b[:, None, None], -1)
    shift = (n_sub * b)[:, None]
    return (
        flat.reshape(-1, idx.shape[1]).astype(np.int32),
        np.repeat(b, n_sub).astype(np.int32),
        (rows[None] + shift).reshape(-1),
        (cols[None] + shift).reshape(-1),
        np.tile(coef, n_clusters),
    )


def truncated_plan(n_clusters: int, n_atoms: int, max_order: int) -> SubsetPlan:
    """All non-empty subsets of size <= max_order of each of ``n_clusters`` clusters."""
    idx = lattice.combinations_up_to(n_atoms, max_order)
    rows, cols, coef = lattice.local_mobius_operator(idx, n_atoms)
    flat, cluster, rows, cols, coef = _replicate((idx, rows, cols, coef), n_clusters, n_atoms, len(idx))
    return SubsetPlan(
        idx=jnp.asarray(flat),
        cluster=jnp.asarray(cluster),
        sizes=jnp.asarray(np.tile(lattice.subset_sizes(idx), n_clusters).astype(np.int32)),
        rows=jnp.asarray(rows),
        cols=jnp.asarray(cols),
        coef=jnp.asarray(coef),
        order_weights=None,
        n_clusters=n_clusters,
        n_atoms=n_atoms,
        max_order=max_order,
        mode="truncated",
    )


def connected_plan(
    positions,
    cutoff: float,
    max_order: int,
    atom_mask=None,
    memory_bytes: int | None = None,
    with_operator: bool = True,
) -> SubsetPlan:
    """Subsets connected in the cutoff graph (distance < cutoff, Å) of each cluster.

    Args:
      positions: ``[N, 3]`` or ``[B, N, 3]`` concrete positions (Å).
      max_order: largest subset size K.
      atom_mask: ``[B, N]`` bool real atoms (padding atoms belong to no subset).
      memory_bytes: raise MemoryError (with a hint) when the family would exceed this.
      with_operator: keep the Möbius operator (needed for ``terms``).
    """
    pos = np.asarray(positions, dtype=np.float64)
    pos = pos[None] if pos.ndim == 2 else pos
    n_clusters, n = pos.shape[:2]
    mask = np.ones((n_clusters, n), bool) if atom_mask is None else np.asarray(atom_mask, bool)
    mask = mask.reshape(n_clusters, n)
    if isinstance(max_order, bool) or not isinstance(max_order, (int, np.integer)):
        raise TypeError(f"max_order must be an int, got {max_order!r}")
    if not 1 <= max_order <= n:
        raise ValueError(f"max_order={max_order} must lie in 1..N={n}")
    cutoff = geometry.check_cutoff(cutoff, "cutoff", optional=False)
    adjacency = geometry.cutoff_graph(pos, cutoff, mask)
    budget = None if memory_bytes is None else memory_bytes // plan_bytes(1, max_order, True, True)
    parts, total = [], 0
    for b in range(n_clusters):
        real = np.flatnonzero(mask[b])
        sub_adj = adjacency[b][np.ix_(real, real)]
        left = None if budget is None else max(budget - total, 1)
        idx = lattice.connected_subsets(sub_adj, max_order, max_subsets=left)
        rows, cols, coef = lattice.local_mobius_operator(idx, len(real), sub_adj)
        idx = np.where(idx >= 0, real[np.maximum(idx, 0)] + b * n, -1)
        k_pad = np.full((len(idx), max_order - idx.shape[1]), -1)
        parts.append((np.concatenate([idx, k_pad], 1), rows + total, cols + total, coef, b))
        total += len(idx)
    idx = np.concatenate([p[0] for p in parts]).astype(np.int32)
    rows = np.concatenate([p[1] for p in parts])
    cols = np.concatenate([p[2] for p in parts])
    coef = np.concatenate([p[3] for p in parts])
    cluster = np.concatenate([np.full(len(p[0]), p[4]) for p in parts]).astype(np.int32)
    sizes = lattice.subset_sizes(idx).astype(np.int32)
    weights = np.zeros((len(idx), max_order))
    np.add.at(weights, (cols, sizes[rows] - 1), coef)
    keep = with_operator
    return SubsetPlan(
        idx=jnp.asarray(idx),
        cluster=jnp.asarray(cluster),
        sizes=jnp.asarray(sizes),
        rows=jnp.asarray(rows) if keep else None,
        cols=jnp.asarray(cols) if keep else None,
        coef=jnp.asarray(coef) if keep else None,
        order_weights=jnp.asarray(weights),
        n_clusters=n_clusters,
        n_atoms=n,
        max_order=max_order,
        mode="connected",
        cutoff=float(cutoff),
        graph_hash=jnp.asarray(geometry.graph_hash(pos, cutoff, mask)),
    )
