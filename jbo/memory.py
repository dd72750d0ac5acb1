"""How much memory a decomposition holds, and the one refusal when it would not fit.

``exhaustive_bytes`` bounds what each exhaustive layout allocates (host and device);
``too_big`` is the error message, naming the largest ``max_order`` that would fit;
``check_exhaustive_fits`` raises it. The limit is ``JBO_MEMORY_LIMIT``
(:func:`jbo.checks.memory_limit`, default 4 GiB).
"""

from __future__ import annotations

from jbo import lattice
from jbo.checks import memory_limit
from jbo.plans import plan_bytes

__all__ = ["exhaustive_bytes", "too_big", "check_exhaustive_fits"]


def exhaustive_bytes(n_clusters: int, n: int, forces: bool, terms: bool = True,
                      layout: str = "compact") -> int:
    """Upper bound of the bytes an exhaustive call holds at once, host and device.

    Per cluster and subset: the lattice energies as evaluated, scattered, Möbius-transformed
    (the butterfly holds ~3 copies), masked and returned (8 float64 copies), gradients (4
    copies of 3N float64), the int64 evaluation indices, bitmask range and ``inside`` mask;
    on the host the int64 subsets, bitmasks and order table and the finiteness check's copy of
    the terms; the compact layout adds its ``[2^N, N]`` int32 index table with its per-bucket
    copies and program constants. Plus 16 MiB for tracing and the program. Checked against
    XLA's memory analysis and tracemalloc by tests/test_first_call.py.
    """
    size = 1 << n
    per_subset = 8 * 8 + (4 * 8 * 3 * n if forces else 0) + 8 * 3  # device, per cluster
    device = n_clusters * size * per_subset
    host = 8 * size * 4 + (8 * n_clusters * size if terms else 0)
    if layout == "compact":
        host += 3 * 4 * n * size + 8 * size * 2  # index table, bucket copies, bitmasks, sizes
        device += 4 * n * size  # the bucket index tables as program constants
    return device + host + 16 * 2**20


def too_big(n_clusters: int, n: int, k: int | None, need: int, forces: bool) -> str:
    limit = memory_limit()
    fit = [kk for kk in range(1, n) if plan_bytes(
        n_clusters * lattice.n_subsets_up_to(n, kk), kk, True, forces) <= limit]
    what = "all 2^N" if k is None else f"all subsets up to size {k} of"
    hint = f"max_order={fit[-1]} fits" if fit else "no max_order fits"
    return (
        f"decomposing {what} N={n} atoms ({n_clusters} cluster(s)) needs ~{need / 2**30:.1f} GiB, "
        f"over the {limit / 2**30:.1f} GiB limit (JBO_MEMORY_LIMIT): {hint}; "
        "or pass cutoff=... for the connected mode of a local model"
    )


def check_exhaustive_fits(n_clusters: int, n: int, forces: bool, terms: bool = True,
                           layout: str = "compact") -> None:
    need = exhaustive_bytes(n_clusters, n, forces, terms, layout)
    if n > 40 or need > memory_limit():
        raise MemoryError(too_big(n_clusters, n, None, need, forces))
