"""Data parallelism with ``jax.sharding``: batch axis split over devices, parameters replicated.

``jax.jit`` partitions the step from the input shardings (GSPMD): each device computes its
slice of the per-structure losses (and of the regularizer's clusters) and the reductions become
all-reduces. The batch composition never depends on the device count (arrays are padded with
weight-0 rows to a multiple of it), so a sharded run reproduces the single-device losses to
rounding. The same code runs on any set of local devices (CPU, GPU, TPU).

Colab TPU (unchanged code): Runtime > Change runtime type > TPU, then in a cell::

    !git clone <this repo> jbo && pip install -q -e jbo "jax[tpu]"
    import jax; print(jax.devices())          # 8 TPU cores (restart the runtime if not)
    from jbo.train import TrainConfig, train
    train(TrainConfig(db="data/h_clusters.npz", shard=True, batch_size=64,
                      dtype="float32", out_dir="run"))
    # or: !jbo train --db data/h_clusters.npz --shard --dtype float32 --out run

TPUs emulate float64 slowly: train the model in float32 (the regularizer's subset energies and
Möbius sums stay float64 by design). To test sharding on a CPU-only machine, set
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` *before* importing jax.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["data_mesh", "shard_batch", "replicate", "round_up"]

AXIS = "data"


def data_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: all local devices)."""
    devices = list(jax.local_devices() if devices is None else devices)
    return Mesh(np.array(devices), (AXIS,))


def round_up(n: int, mesh: Mesh | None) -> int:
    """``n`` rounded up to a multiple of the mesh size (batch sizes must divide evenly)."""
    if mesh is None:
        return n
    d = mesh.devices.size
    return -(-n // d) * d


def shard_batch(batch: Any, mesh: Mesh | None) -> Any:
    """Put every array of ``batch`` (a pytree, e.g. :class:`jbo.data.batch.Batch`) on the
    mesh, split along its leading (batch) axis."""
    if mesh is None:
        return jax.tree_util.tree_map(jax.numpy.asarray, batch)
    d = mesh.devices.size

    def put(x):
        x = np.asarray(x)
        if x.shape[0] % d:
            raise ValueError(f"batch axis {x.shape[0]} is not divisible by {d} devices; "
                             "pad the batch (jbo.train.sharding.round_up)")
        spec = PartitionSpec(AXIS, *([None] * (x.ndim - 1)))
        return jax.device_put(x, NamedSharding(mesh, spec))
    return jax.tree_util.tree_map(put, batch)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Replicate a pytree (parameters, optimizer state) on every device of ``mesh``."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
