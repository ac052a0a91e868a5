"""Shard an optimizer state over a device mesh (ZeRO / FSDP style), for ``jax.jit``.

Replicating the state of a Kronecker-factored optimizer on every device costs each device
the whole state. These functions give every array of a state a
:class:`jax.sharding.PartitionSpec` over named mesh axes instead, so that each device keeps
about ``1/N`` of it and XLA's SPMD partitioner splits the work that produces it:

- **Kronecker factors** (``KroneckerState.factors`` of Shampoo, Sketchy and KrADagrad): each
  leaf is stacked over the blocks of one block shape, ``[n, d, ...]``. Its leading (block)
  axis is split over the mesh axes when ``n`` is divisible by their size: each device owns
  ``n / N`` blocks, and the vmapped statistics update, refresh (``eigh``, FD's SVD) and
  preconditioning run on the owned blocks only. When ``n`` is not divisible, the largest
  other dimension that is divisible is split instead (the factor is stored sharded); when
  none is (e.g. a ``9 x 9`` factor), the leaf is replicated. :func:`layout_summary`
  reports how many bytes took each route. XLA alone would gather a factor split along a
  matrix dimension for its decomposition and repeat the decomposition on every device;
  pass the optimizer ``block_sharding`` (:func:`sketchy.kronecker.map_blocks`) to split
  the decompositions by blocks instead (zero blocks pad the group to a multiple of N for
  that computation only; the stored state keeps its shapes).
- **Every other array** (graft accumulators, momentum, Adam's moments: shaped like the
  parameters) is split on its largest divisible dimension, first over ``param_axes`` by
  exactly the rule of :func:`param_specs`, so a parameter-shaped leaf is sharded like its
  parameter, then over the remaining state axes (ZeRO-1 on top of FSDP).
- Scalars (step counts, failure counters) are replicated, and so is every array smaller
  than ``min_bytes`` (splitting it would save less than that per device and cost a
  collective, and compile time, per array).

No padding: a split is used only where it divides the dimension, because the state's
shapes are the optimizer's (padding would change them and its checkpoints).

Use a mesh with ``Auto`` axes (``jax.make_mesh(..., axis_types=(AxisType.Auto,) * k)``):
the specs are the jitted step's input and output shardings and XLA propagates them through
the optimizer; with ``Explicit`` axes JAX would type-check every operation's sharding.

    specs = sharding.state_specs(jax.eval_shape(tx.init, params), mesh, axes=("data",))
    state = jax.jit(tx.init, out_shardings=sharding.named(mesh, specs))(params)
"""

import math
from collections.abc import Mapping, Sequence

import jax
from jax.sharding import NamedSharding, PartitionSpec

# The field of KroneckerState whose leaves carry a leading block axis.
FACTORS_FIELD = "factors"


def _sizes(mesh) -> dict[str, int]:
    """``{axis name: size}`` of a Mesh, AbstractMesh or plain mapping."""
    return dict(mesh if isinstance(mesh, Mapping) else mesh.shape)


def _largest_first(shape: Sequence[int], dims: Sequence[int]) -> list[int]:
    return sorted(dims, key=lambda d: -shape[d])  # stable: ties keep the earlier dim


def spec_for(shape: Sequence[int], axes: Sequence[tuple[str, int]], order: Sequence[int]):
    """Split ``shape`` over ``axes`` (``(name, size)`` in turn): each axis goes to the first
    dimension in ``order`` whose (already split) size it divides; an axis that divides none
    is left out (replicated over it)."""
    local = [int(d) for d in shape]
    names: list[list[str]] = [[] for _ in local]
    for name, size in axes:
        if size <= 1:
            continue
        for d in order:
            if local[d] >= size and local[d] % size == 0:
                names[d].append(name)
                local[d] //= size
                break
    entries = [None if not n else n[0] if len(n) == 1 else tuple(n) for n in names]
    while entries and entries[-1] is None:
        entries.pop()
    return PartitionSpec(*entries)


def _axes(mesh, names: Sequence[str]) -> list[tuple[str, int]]:
    sizes = _sizes(mesh)
    unknown = [n for n in names if n not in sizes]
    if unknown:
        raise ValueError(f"mesh has no axis {unknown} (its axes: {sorted(sizes)})")
    return [(n, sizes[n]) for n in dict.fromkeys(names)]


def _is_factor(path) -> bool:
    return any(isinstance(k, jax.tree_util.GetAttrKey) and k.name == FACTORS_FIELD for k in path)


def _nbytes(leaf) -> int:
    return math.prod(leaf.shape) * leaf.dtype.itemsize


def param_specs(params, mesh, axes: Sequence[str] = (), *, min_bytes: int = 0):
    """Specs for parameters: each split over ``axes`` on its largest divisible dimension
    (``axes=()``: replicated, plain data parallelism; below ``min_bytes``: replicated)."""
    named_axes = _axes(mesh, axes)

    def spec(leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        if _nbytes(leaf) < min_bytes:
            return PartitionSpec()
        return spec_for(shape, named_axes, _largest_first(shape, range(len(shape))))

    return jax.tree.map(spec, params)


def state_specs(
    opt_state,
    mesh,
    axes: Sequence[str] = ("data",),
    param_axes: Sequence[str] = (),
    *,
    min_bytes: int = 0,
):
    """Specs for an optimizer state (concrete or from ``jax.eval_shape(tx.init, params)``).

    ``axes``: the mesh axes the state is split over; ``param_axes``: those the parameters
    are split over (:func:`param_specs` with the same ``min_bytes``), which
    parameter-shaped state follows; arrays under ``min_bytes`` stay whole. See the module
    doc for the rule.
    """
    state_axes = _axes(mesh, [*param_axes, *axes])

    def spec(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        if not shape or _nbytes(leaf) < min_bytes:
            return PartitionSpec()
        if _is_factor(path):
            order = [0, *_largest_first(shape, range(1, len(shape)))]
        else:
            order = _largest_first(shape, range(len(shape)))
        return spec_for(shape, state_axes, order)

    return jax.tree_util.tree_map_with_path(spec, opt_state)


def named(mesh, specs):
    """``NamedSharding`` s on ``mesh`` for a tree of specs."""
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


def shard_shape(shape: Sequence[int], spec: PartitionSpec, mesh) -> tuple[int, ...]:
    """The shape of one device's piece of an array of ``shape`` split by ``spec``."""
    sizes = _sizes(mesh)
    out = list(shape)
    for d, entry in enumerate(spec):
        for name in (entry,) if isinstance(entry, str) else entry or ():
            out[d] //= sizes[name]
    return tuple(out)


def _leaves_with_specs(tree, specs):
    leaves = jax.tree.leaves(tree)
    flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    if len(leaves) != len(flat_specs):
        raise ValueError(f"{len(leaves)} arrays but {len(flat_specs)} specs")
    return zip(leaves, flat_specs, strict=True)


def per_device_bytes(tree, specs, mesh) -> int:
    """Bytes of ``tree`` that one device stores under ``specs`` (every device the same)."""
    return sum(
        math.prod(shard_shape(leaf.shape, spec, mesh)) * leaf.dtype.itemsize
        for leaf, spec in _leaves_with_specs(tree, specs)
    )


def layout_summary(opt_state, specs) -> dict[str, int]:
    """Total bytes by route: ``block_axis`` (factors split on their leading block axis),
    ``other_axis`` (split on another dimension), ``replicated`` (arrays with a dimension,
    left whole), ``scalars``."""
    out = dict.fromkeys(("block_axis", "other_axis", "replicated", "scalars"), 0)
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(opt_state)[0]]
    for path, (leaf, spec) in zip(paths, _leaves_with_specs(opt_state, specs), strict=True):
        nbytes = math.prod(leaf.shape) * leaf.dtype.itemsize
        if not leaf.shape:
            key = "scalars"
        elif not any(spec):
            key = "replicated"
        elif _is_factor(path) and spec[0] is not None:
            key = "block_axis"
        else:
            key = "other_axis"
        out[key] += nbytes
    return out
