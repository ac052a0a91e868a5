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


def maybe_initialize_distributed(
    mode: str,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """``jax.distributed.initialize()`` for ``mode="on"``, or ``"auto"`` under a launcher
    or with an explicit ``coordinator_address``.

    Unset arguments are found by JAX's cluster detection (SLURM, Open MPI, Cloud TPU); on
    Cloud TPU pods ``initialize()`` finds its peers by itself: use ``mode="on"``. Explicit
    ones (``mesh.coordinator_address=HOST:PORT mesh.num_processes=N mesh.process_id=I``)
    start processes by hand, e.g. several on one machine.
    """
    if mode not in ("auto", "on", "off"):
        raise UserError(f"mesh.distributed must be auto, on or off, got {mode!r}")
    explicit = {
        k: v
        for k, v in (
            ("coordinator_address", coordinator_address),
            ("num_processes", num_processes),
            ("process_id", process_id),
        )
        if v is not None
    }
    if mode == "off" or not (
        mode == "on" or _launched_as_multiprocess() or coordinator_address is not None
    ):
        return
    try:
        jax.distributed.initialize(**explicit)
    except ValueError as e:  # nothing to join: JAX's message says which value is missing
        raise UserError(
            f"mesh.distributed={mode} found no cluster to join ({' '.join(str(e).split())}): "
            f"run under a multi-process launcher (SLURM, a TPU pod), pass "
            f"mesh.coordinator_address=HOST:PORT mesh.num_processes=N mesh.process_id=I, "
            f"or use mesh.distributed=off on one host"
        ) from e


def check_expected(expect, name: str | None) -> None:
    """One line (``UserError``) when the devices are not the hardware a preset is for.

    ``expect``: ``None`` (no check) or a mapping with any of ``platform`` (``gpu``,
    ``tpu``, ``cpu``), ``device_kind`` (a substring of ``jax.devices()[0].device_kind``,
    e.g. ``"TPU v4"``) and ``devices_multiple_of`` (e.g. 8 GPUs per node).
    """
    if not expect:
        return
    devices = jax.devices()
    n, platform, kind = len(devices), devices[0].platform, devices[0].device_kind
    want_platform, want_kind = expect.get("platform"), expect.get("device_kind")
    multiple = expect.get("devices_multiple_of")
    ok = (
        (want_platform is None or platform == want_platform)
        and (want_kind is None or str(want_kind).lower() in kind.lower())
        and (multiple is None or n % int(multiple) == 0)
    )
    if ok:
        return
    details = [want_platform if want_kind else None, multiple and f"a multiple of {multiple}"]
    details = ", ".join(str(d) for d in details if d)
    wanted = f"{want_kind or want_platform or 'other'} devices" + (
        f" ({details})" if details else ""
    )
    seen = f"{n} {platform} device(s)" + (f" ({kind})" if kind.lower() != platform else "")
    preset = f"mesh={name}" if name else "the mesh preset"
    raise UserError(
        f"{preset} is for {wanted} but this run sees {seen}: run "
        f"it on that hardware, choose a preset that fits (mesh=data, mesh=data_model), or "
        f"pass mesh.expect=null to use its layout anyway"
    )


def make_mesh(axes: dict[str, int]) -> Mesh:
    """A mesh with the named axes (``-1``: all remaining devices); ``data`` is required.

    Axes are ``Auto`` (the compiler propagates shardings from the arrays' and the jitted
    functions' shardings). On one host a mesh may use the first ``prod(sizes)`` devices
    only (e.g. ``mesh.axes.data=1`` for a single-device run).
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


def batch_sharding(mesh: Mesh, axes: tuple[str, ...] = ("data",)) -> NamedSharding:
    """Rows split over ``axes`` (one axis: ``P("data")``; several: ``P(("data", "model"))``)."""
    return NamedSharding(mesh, PartitionSpec(axes[0] if len(axes) == 1 else tuple(axes)))


def put_batch(batch, mesh: Mesh, axes: tuple[str, ...] = ("data",)):
    """Place a host batch (same global batch on every process) with rows split on ``axes``.

    Each process contributes only the rows of its addressable devices, so this works
    unchanged on one host and on many.
    """
    sharding = batch_sharding(mesh, axes)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, batch)


def host_readable(tree, mesh: Mesh):
    """``tree`` with every array readable by this process (``np.asarray``): itself on one
    host; on several, a replicated copy (arrays split across hosts are not addressable)."""
    if jax.process_count() == 1:
        return tree
    return jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)
