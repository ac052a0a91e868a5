"""Where each part of the train state lives on the mesh: the ``mesh.*`` layout settings.

- ``mesh.batch_axes``: the mesh axes the batch rows are split over (data parallelism);
- ``mesh.param_axes``: the axes parameters are split over (FSDP-style: XLA gathers a
  weight where it is used); ``[]``: replicated;
- ``mesh.state_axes``: the axes the optimizer state is split over (ZeRO-1 when parameters
  are replicated); ``[]``: replicated. The rule per array is the library's
  :mod:`sketchy.sharding` (Kronecker factors on their leading block axis, parameter-shaped
  state like its parameter);
- ``mesh.min_shard_bytes``: parameters and state arrays smaller than this stay replicated
  (default 256 KiB: biases, norms, small kernels and factors; splitting them saves little
  memory and costs a collective and compile time each).

Model state (BatchNorm statistics), the step and the RNG key stay replicated.
"""

import inspect
import math
from typing import NamedTuple

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from launch.errors import UserError
from launch.train_step import TrainState
from sketchy import sharding as lib

_KEYS = ("batch_axes", "param_axes", "state_axes")


MIN_SHARD_BYTES = 2**18


class Layout(NamedTuple):
    batch_axes: tuple[str, ...]
    param_axes: tuple[str, ...]
    state_axes: tuple[str, ...]
    min_shard_bytes: int = MIN_SHARD_BYTES


def layout_of(mcfg, mesh: Mesh) -> Layout:
    """The validated layout of ``mesh.*`` (defaults: batch on ``data``, the rest replicated)."""
    names = tuple(mesh.axis_names)
    defaults = {"batch_axes": ("data",), "param_axes": (), "state_axes": ()}
    out = {}
    for key in _KEYS:
        value = mcfg.get(key)
        value = defaults[key] if value is None else value
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise UserError(
                f"mesh.{key}={value!r} must be a list of mesh axis names: use e.g. "
                f"mesh.{key}=[{names[0]}]"
            )
        bad = [v for v in value if v not in names]
        if bad:
            raise UserError(
                f"mesh.{key}={list(value)} names {bad}, not an axis of this mesh: use names "
                f"from mesh.axes ({', '.join(names)}), e.g. mesh.{key}=[{names[0]}]"
            )
        if len(set(value)) != len(value):
            raise UserError(f"mesh.{key}={list(value)} repeats an axis: name each axis once")
        out[key] = tuple(value)
    if not out["batch_axes"]:
        raise UserError(
            f"mesh.batch_axes=[] leaves the batch unsplit: name at least one mesh axis, "
            f"e.g. mesh.batch_axes=[{names[0]}]"
        )
    min_bytes = mcfg.get("min_shard_bytes")
    min_bytes = MIN_SHARD_BYTES if min_bytes is None else min_bytes
    if not isinstance(min_bytes, int) or isinstance(min_bytes, bool) or min_bytes < 0:
        raise UserError(
            f"mesh.min_shard_bytes={min_bytes!r} must be an integer >= 0 (arrays smaller "
            f"than this stay replicated): use e.g. mesh.min_shard_bytes={MIN_SHARD_BYTES}"
        )
    return Layout(**out, min_shard_bytes=min_bytes)


def batch_shards(mesh: Mesh, layout: Layout) -> int:
    """Into how many row blocks a batch is split (the product of the batch axes' sizes)."""
    return math.prod(mesh.shape[a] for a in layout.batch_axes)


def optimizer_options(make_optimizer, mesh: Mesh, layout: Layout) -> dict:
    """Arguments the trainer adds to the optimizer for this mesh: ``block_sharding`` when
    the state is split over more than one device and the optimizer takes it (Shampoo,
    Sketchy), so their decompositions are split over those devices by blocks
    (:func:`sketchy.kronecker.map_blocks`) rather than repeated on each."""
    axes = tuple(dict.fromkeys((*layout.param_axes, *layout.state_axes)))
    if math.prod(mesh.shape[a] for a in axes) <= 1:
        return {}
    if "block_sharding" not in inspect.signature(make_optimizer).parameters:
        return {}
    return {"block_sharding": NamedSharding(mesh, PartitionSpec(axes))}


def train_state_shardings(mesh: Mesh, layout: Layout, abstract: TrainState) -> TrainState:
    """A :class:`TrainState` of ``NamedSharding`` s for the (abstract) state ``abstract``."""
    repl = NamedSharding(mesh, PartitionSpec())
    return TrainState(
        step=repl,
        params=lib.named(
            mesh,
            lib.param_specs(
                abstract.params, mesh, layout.param_axes, min_bytes=layout.min_shard_bytes
            ),
        ),
        model_state=jax.tree.map(lambda _: repl, abstract.model_state),
        opt_state=lib.named(
            mesh,
            lib.state_specs(
                abstract.opt_state,
                mesh,
                axes=layout.state_axes,
                param_axes=layout.param_axes,
                min_bytes=layout.min_shard_bytes,
            ),
        ),
        rng=repl,
    )


def _specs(shardings):
    return jax.tree.map(lambda s: s.spec, shardings, is_leaf=lambda x: isinstance(x, NamedSharding))


def report(mesh: Mesh, abstract: TrainState, shardings: TrainState) -> dict[str, float]:
    """Per-device bytes of the optimizer state (and what full replication would cost), and
    how its bytes were split (:func:`sketchy.sharding.layout_summary`), for the metrics."""
    specs = _specs(shardings.opt_state)
    per_device = lib.per_device_bytes(abstract.opt_state, specs, mesh)
    routes = lib.layout_summary(abstract.opt_state, specs)
    total = sum(routes.values())
    out = {
        "optimizer/bytes_per_device": per_device,
        "optimizer/bytes_per_device_vs_replicated": per_device / total if total else 1.0,
        "model/param_bytes_per_device": lib.per_device_bytes(
            abstract.params, _specs(shardings.params), mesh
        ),
        "mesh/devices": mesh.size,
    }
    out |= {f"optimizer/layout_{k}_bytes": v for k, v in routes.items()}
    return out
