"""The device mesh and the moves between process-local numpy arrays and global jax arrays.

A mesh has two axes: `data` (batches are split over it; BatchNorm statistics are still those of
the global batch) and `grid` (the stacked points of a batched grid are split over it, so different
devices train different points on the same batches). A single run has a `grid` axis of size 1.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
GRID_AXIS = "grid"


def grid_mesh(num_points: int = 1, devices=None) -> Mesh:
    """A (data, grid) mesh over every device. The grid axis takes the largest share of each
    process's devices that divides `num_points`, so a point's devices never span processes.

    Devices are ordered by process, so process p's devices hold the p-th block of the data axis:
    its rows of each batch (see jaxft/data/pipeline.py) then stay on its own devices."""
    if devices is None:
        devices = sorted(jax.devices(), key=lambda device: (device.process_index, device.id))
    devices = np.asarray(devices).reshape(-1)
    local = devices.size // jax.process_count()
    grid = math.gcd(max(1, num_points), local)
    return Mesh(devices.reshape(devices.size // grid, grid), (DATA_AXIS, GRID_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree on every device of the mesh (every process passes the same values)."""
    return _put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_points(tree: Any, mesh: Mesh) -> Any:
    """Lays a stacked pytree (leading axis = grid points) over the mesh's grid axis."""
    return _put(tree, NamedSharding(mesh, PartitionSpec(GRID_AXIS)))


def _put(tree: Any, sharding: NamedSharding) -> Any:
    def put(leaf):
        leaf = np.asarray(leaf)
        # Every process holds the whole value: pick out what its own devices need.
        return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

    return jax.tree.map(put, tree)


def global_batch(batch: dict, mesh: Mesh) -> dict:
    """Turns this process's share of a batch into global arrays split over the data axis."""
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for key, value in batch.items()}


def eval_batch_size(requested: int, mesh: Mesh) -> int:
    """The requested eval batch rounded down to a multiple of the data axis (at least one row
    per device): padding fills the last batch, so any size counts every image."""
    shards = mesh.shape[DATA_AXIS]
    return max(shards, requested // shards * shards)


def fetch(tree: Any) -> Any:
    """Global arrays back to numpy on every process (gathered across processes if needed)."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)
