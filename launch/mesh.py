"""Device mesh: ``jax.make_mesh`` with named axes; multi-host through ``jax.distributed``."""

import math
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from launch.errors import UserError


def _launched_as_multiprocess() -> bool:
    """Whether a launcher (manual coordinator, SLURM, Open MPI) started several processes."""
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        return True
    return any(int(os.environ.get(v, "1")) > 1 for v in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))


def maybe_initialize_distributed(mode: str) -> None:
    """``jax.distributed.initialize()`` for ``mode="on"``, or ``"auto"`` under a launcher.

    On Cloud TPU pods ``initialize()`` finds its peers by itself: use ``mode="on"``.
    """
    if mode not in ("auto", "on", "off"):
        raise UserError(f"mesh.distributed must be auto, on or off, got {mode!r}")
    if mode == "on" or (mode == "auto" and _launched_as_multiprocess()):
        jax.distributed.initialize()


def make_mesh(axes: dict[str, int]) -> Mesh:
    """A mesh with the named axes (``-1``: all remaining devices); ``data`` is required.

    Axes are ``Auto`` (the compiler propagates shardings), which is what plain data
    parallelism with replicated parameters needs. On one host a mesh may use the first
    ``prod(sizes)`` devices only (e.g. ``mesh.axes.data=1`` for a single-device run).
    """
    if "data" not in axes:
        raise UserError(f"mesh needs a 'data' axis, got axes {dict(axes)}")
    n = jax.device_count()
    sizes = dict(axes)
    free = [k for k, v in sizes.items() if v == -1]
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if len(free) > 1 or fixed < 1 or any(v == 0 or v < -1 for v in sizes.values()):
        raise UserError(f"mesh {dict(axes)}: sizes must be positive, with at most one -1")
    for k in free:
        sizes[k] = n // fixed
    used = math.prod(sizes.values())
    if used < 1 or used > n or (used < n and jax.process_count() > 1):
        raise UserError(
            f"mesh {dict(axes)} needs {max(used, fixed)} devices but {n} are available: choose "
            f"sizes whose product is at most {n} (exactly {n} on multi-host runs), "
            f"e.g. mesh.axes.data=-1"
        )
    names = tuple(sizes)
    return jax.make_mesh(
        tuple(sizes.values()),
        names,
        axis_types=(AxisType.Auto,) * len(names),
        devices=jax.devices()[:used],
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("data"))


def put_batch(batch, mesh: Mesh):
    """Place a host batch (same global batch on every process) sharded on ``data``.

    Each process contributes only the rows of its addressable devices, so this works
    unchanged on one host and on many.
    """
    sharding = batch_sharding(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, batch)
