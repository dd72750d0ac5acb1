"""The subset lattice: subsets as bitmasks or padded index rows, and Möbius inversion on it.

Two representations of a family of subsets of ``n`` atoms are used:

* **bitmask**: an integer whose bit ``i`` says atom ``i`` is in the subset. The full lattice of
  ``2**n`` subsets is an array indexed by bitmask (entry 0 is the empty set). Used by the
  exhaustive decomposition with the fast O(n 2^n) Möbius/zeta transforms below.
* **index rows**: ``idx[M, K]`` int32, each row the sorted atom indices of one subset, padded with
  ``-1``. Used for families of small subsets of large clusters (all subsets of size <= K, or the
  subsets connected in a cutoff graph), with a sparse Möbius operator built on the host.

Interaction terms are ε(S) = Σ_{T⊆S} (−1)^{|S|−|T|} E(T) (``mobius``) and E(S) = Σ_{T⊆S} ε(T)
(``zeta``).
"""

from __future__ import annotations

import functools
from math import comb

import jax
import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray

# ----------------------------------------------------------------------------- bitmasks


def popcount(x):
    """Number of set bits of each entry of an integer array (numpy or jax), same shape."""
    xp = jnp if isinstance(x, jnp.ndarray) and not isinstance(x, np.ndarray) else np
    x = xp.asarray(x).astype(xp.int64)
    count = xp.zeros_like(x)
    for shift in range(63):
        count = count + ((x >> shift) & 1)
    return count


def members(mask: int) -> list[int]:
    """Atom indices whose bit is set in ``mask`` (bit i = atom i), ascending."""
    mask = int(mask)
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def _n_from_length(length: int) -> int:
    n = length.bit_length() - 1
    if length != 1 << n:
        raise ValueError(f"a subset-lattice axis must have length 2**n, got {length}")
    return n


def _butterfly(values: Array, axis: int, sign: float) -> Array:
    """Apply x[S ∪ {i}] += sign * x[S] for every bit i: the zeta (+1) or Möbius (−1) transform.

    One loop step per bit, highest first, on the flat lattice axis (``x[S] + sign * x[S − 2^i]``
    where bit i of S is set): a single small loop body to compile whatever ``n`` and the
    trailing axes (a per-bit unrolled reshape costs ~10x more compile, forces ~20x).
    """
    values = jnp.moveaxis(jnp.asarray(values), axis, 0)
    n = _n_from_length(values.shape[0])
    index = jnp.arange(values.shape[0], dtype=_index_dtype(n))

    def step(k, x):
        bit = n - 1 - k
        has = ((index >> bit) & 1).astype(bool).reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(has, x + sign * jnp.roll(x, jnp.left_shift(1, bit), axis=0), x)

    return jnp.moveaxis(jax.lax.fori_loop(0, n, step, values), 0, axis)


def mobius(values: Array, axis: int = 0) -> Array:
    """Interaction terms ε(S) = Σ_{T⊆S} (−1)^{|S|−|T|} E(T) from subset energies.

    Args:
      values: ``[..., 2**n, ...]`` energies indexed by bitmask along ``axis`` (entry 0 = ∅).
        Any trailing or leading axes (e.g. gradients ``[2**n, N, 3]``) are transformed alike.
    Returns: the same shape. O(n 2^n) additions; jittable and differentiable.
    """
    return _butterfly(values, axis, -1.0)


def zeta(values: Array, axis: int = 0) -> Array:
    """Subset sums E(S) = Σ_{T⊆S} ε(T): the inverse of :func:`mobius`."""
    return _butterfly(values, axis, 1.0)


def order_sums(terms: Array, n: int | None = None, axis: int = 0) -> Array:
    """Per-order sums E^(k) = Σ_{|S|=k} ε(S), k = 1..n, of lattice-indexed terms.

    Args:
      terms: ``[..., 2**n, ...]`` indexed by bitmask along ``axis``.
    Returns: the per-order sums with the lattice axis replaced by an axis of length ``n``.
    """
    terms = jnp.moveaxis(jnp.asarray(terms), axis, 0)
    n_found = _n_from_length(terms.shape[0])
    if n is not None and n != n_found:
        raise ValueError(f"terms hold the lattice of {n_found} atoms, not {n}")
    # |S| of every bitmask, computed on device: no [2^n, n] one-hot table on host or device
    order = jax.lax.population_count(jnp.arange(1 << n_found, dtype=_index_dtype(n_found)))
    sums = jax.ops.segment_sum(terms, order, n_found + 1, indices_are_sorted=False)[1:]
    return jnp.moveaxis(sums, 0, axis)


def _index_dtype(n: int):
    return jnp.int32 if n < 31 else jnp.int64


# ----------------------------------------------------------------------------- index rows


def n_subsets_up_to(n: int, k: int) -> int:
    """Number of non-empty subsets of ``n`` atoms with at most ``k`` members."""
    return sum(comb(n, j) for j in range(1, min(k, n) + 1))


def combinations_up_to(n: int, k: int) -> np.ndarray:
    """All non-empty subsets of size <= k of ``n`` atoms as ``idx[M, k]`` (−1 padded).

    Ordered by size, then lexicographically. Pure numpy (host side, static shapes).
    """
    if k < 1:
        raise ValueError(f"max_order must be >= 1, got {k}")
    k = min(k, n)
    rows = [np.arange(n, dtype=np.int32)[:, None]]
    for size in range(2, k + 1):
        prev = rows[-1]
        last = prev[:, -1]
        counts = n - 1 - last
        starts = np.repeat(prev, counts, axis=0)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        new = np.repeat(last, counts) + 1 + offsets
        rows.append(np.concatenate([starts, new[:, None].astype(np.int32)], axis=1))
    out = np.full((sum(len(r) for r in rows), k), -1, dtype=np.int32)
    at = 0
    for r in rows:
        out[at : at + len(r), : r.shape[1]] = r
        at += len(r)
    return out


#: Buckets of subset sizes in the exhaustive compact layout (each bucket: one compiled instance).
N_BUCKETS = 3


@functools.lru_cache(maxsize=None)
def size_buckets(n: int, n_buckets: int = N_BUCKETS) -> tuple[int, ...]:
    """Widths W_1 < ... < W_b = n grouping subset sizes 1..n into ``n_buckets`` contiguous
    buckets (sizes W_{j-1}+1..W_j evaluated at width W_j) that minimise the padded work
    Σ_k C(n, k) W(k)² of an O(W²) model (dynamic programme over the boundaries)."""
    sizes = range(1, n + 1)
    best: dict[tuple[int, int], tuple[float, tuple[int, ...]]] = {}

    def cover(lo: int, b: int) -> tuple[float, tuple[int, ...]]:
        if lo > n:
            return 0.0, ()
        if b == 0:
            return float("inf"), ()
        if (lo, b) not in best:
            options = []
            for hi in range(lo, n + 1):
                rest = cover(hi + 1, b - 1)
                work = sum(comb(n, k) for k in sizes[lo - 1:hi]) * hi**2
                options.append((work + rest[0], (hi,) + rest[1]))
            best[lo, b] = min(options)
        return best[lo, b]

    return cover(1, max(1, min(n_buckets, n)))[1]


def subset_sizes(idx: np.ndarray) -> np.ndarray:
    """Number of members of each padded row ``idx[M, K]`` → ``[M]``."""
    return (np.asarray(idx) >= 0).sum(axis=-1)


def subset_keys(idx: np.ndarray, n: int) -> np.ndarray:
    """A unique int64 key per subset row (combinatorial number system, offset by size).

    Raises ValueError when the keys would overflow int64 (astronomically many subsets).
    """
    idx = np.asarray(idx)
    k_max = idx.shape[1]
    offsets = np.cumsum([0] + [comb(n, j) for j in range(1, k_max + 1)])
    if offsets[-1] >= 2**62:
        raise ValueError(f"subsets of {n} atoms up to size {k_max} are too many to index")
    sizes = subset_sizes(idx)
    rank = np.zeros(len(idx), dtype=np.int64)
    table = np.array([[comb(a, b) for b in range(k_max + 1)] for a in range(n)], dtype=np.int64)
    for pos in range(k_max):
        col = idx[:, pos]
        present = col >= 0
        rank[present] += table[col[present], pos + 1]
    return np.asarray(offsets, dtype=np.int64)[sizes - 1] + rank


def _canonical(rows: np.ndarray) -> np.ndarray:
    """Sort each row ascending with the −1 padding moved to the end."""
    big = np.iinfo(np.int32).max
    s = np.sort(np.where(rows < 0, big, rows), axis=1)
    return np.where(s == big, -1, s).astype(np.int32)


def connected_subsets(
    adjacency: np.ndarray, max_order: int, max_subsets: int | None = None
) -> np.ndarray:
    """All non-empty subsets of size <= max_order that are connected in a graph.

    Grows level by level: every connected (k+1)-set is a connected k-set plus one neighbour.
    Args:
      adjacency: ``[n, n]`` bool, symmetric, False on the diagonal.
      max_subsets: raise MemoryError once more subsets than this are found.
    Returns: ``idx[M, min(max_order, n)]`` int32, −1 padded, ordered by size then key.
    """
    adjacency = np.asarray(adjacency, dtype=bool)
    n = adjacency.shape[0]
    k = min(max_order, n)
    degree = adjacency.sum(1)
    width = max(int(degree.max(initial=0)), 1)
    nbrs = np.full((n, width), -1, dtype=np.int32)
    for i in range(n):
        js = np.flatnonzero(adjacency[i])
        nbrs[i, : len(js)] = js
    levels = [np.arange(n, dtype=np.int32)[:, None]]
    for size in range(2, k + 1):
        cur = levels[-1]
        if len(cur) == 0:
            break
        cand = nbrs[cur].reshape(len(cur), -1)  # [m, size-1 * width]
        grown = np.concatenate(
            [np.repeat(cur, cand.shape[1], axis=0), cand.reshape(-1, 1)], axis=1
        )
        ok = grown[:, -1] >= 0
        ok &= ~(grown[:, :-1] == grown[:, -1:]).any(axis=1)
        grown = _canonical(grown[ok])
        keys = subset_keys(grown, n)
        _, first = np.unique(keys, return_index=True)
        levels.append(grown[np.sort(first)] if len(first) else grown[:0])
        found = sum(len(lv) for lv in levels)
        if max_subsets is not None and found > max_subsets:
            raise MemoryError(
                f"{found} connected subsets of size <= {size} already exceed the memory budget "
                f"({max_subsets} subsets); lower max_order (now {max_order}) or the cutoff, or "
                "raise JBO_MEMORY_LIMIT"
            )
    out = np.full((sum(len(lv) for lv in levels), k), -1, dtype=np.int32)
    at = 0
    for lv in levels:
        out[at : at + len(lv), : lv.shape[1]] = lv
        at += len(lv)
    order = np.argsort(subset_keys(out, n), kind="stable")
    return out[order]


def local_mobius_operator(
    idx: np.ndarray, n: int, adjacency: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse Möbius operator ε = A E on a down-closed family of (connected) subsets.

    For a local energy (ε(T) = 0 whenever T is disconnected in ``adjacency``) the energy of a
    disconnected set is the sum over its components, and inclusion–exclusion collapses to
    ε(S) = Σ_C (−1)^{|S|−|C|} E(C) over the connected C ⊆ S whose closed neighbourhood covers S.
    With ``adjacency=None`` (complete graph) this is the ordinary Möbius inversion on all subsets.

    Args:
      idx: ``[M, K]`` subset rows, closed under taking connected subsets (as produced by
        :func:`combinations_up_to` or :func:`connected_subsets`).
    Returns: ``(rows, cols, coef)`` COO entries: ε[rows] += coef * E[cols]; coef is ±1.
    """
    idx = np.asarray(idx)
    m, k_max = idx.shape
    sizes = subset_sizes(idx)
    keys = subset_keys(idx, n)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    rows, cols, coef = [], [], []
    for size in range(1, k_max + 1):
        sel = np.flatnonzero(sizes == size)
        if len(sel) == 0:
            continue
        members = idx[sel, :size]  # [m_s, size]
        if adjacency is not None:
            local_adj = np.asarray(adjacency, bool)[members[:, :, None], members[:, None, :]]
        for pattern in range(1, 1 << size):
            bits = np.array([(pattern >> b) & 1 for b in range(size)], dtype=bool)
            sub = np.full((len(sel), k_max), -1, dtype=np.int32)
            sub[:, : bits.sum()] = members[:, bits]
            sub_keys = subset_keys(sub, n)
            pos = np.minimum(np.searchsorted(sorted_keys, sub_keys), m - 1)
            found = sorted_keys[pos] == sub_keys
            if adjacency is not None and not bits.all():
                # every member outside C must touch C
                covered = local_adj[:, ~bits][:, :, bits].any(axis=2).all(axis=1)
                found &= covered
            elif adjacency is None and not found.all():
                raise ValueError("the subset family is not closed under taking subsets")
            rows.append(sel[found])
            cols.append(order[pos[found]])
            coef.append(np.full(found.sum(), (-1.0) ** (size - bits.sum())))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(coef)


def order_weights(n, sizes, max_order: int, table_size: int | None = None) -> Array:
    """Closed-form weights W[T, k] with E^(k) = Σ_T W[T, k] E(T) over all subsets T, |T| <= k.

    W[T, k] = (−1)^{k−|T|} C(n−|T|, k−|T|) for |T| <= k, else 0: each T lies in C(n−|T|, k−|T|)
    supersets of size k. Cumulative sums over k give the classic truncated-MBE coefficients
    E_MBE(K) = Σ_T (−1)^{K−|T|} C(n−|T|−1, K−|T|) E(T).

    Args:
      n: number of atoms (int or traced int array broadcastable against ``sizes``).
      sizes: ``[M]`` subset sizes |T|.
      max_order: K.
      table_size: largest n that can occur (default: ``n`` itself, which must then be an int).
    Returns: ``[M, K]`` float64.
    """
    top = int(n) if table_size is None else table_size
    table = jnp.asarray(
        [[comb(a, c) for c in range(max_order + 1)] for a in range(top + 1)], jnp.float64
    )
    sizes = jnp.asarray(sizes)
    excess = jnp.arange(1, max_order + 1)[None, :] - sizes[:, None]  # k - |T|
    free = jnp.clip(jnp.asarray(n) - sizes, 0, top)
    free = jnp.broadcast_to(free, sizes.shape)[:, None]  # n - |T|
    w = jnp.where(excess % 2 == 0, 1.0, -1.0) * table[free, jnp.clip(excess, 0, max_order)]
    return jnp.where(excess >= 0, w, 0.0)
