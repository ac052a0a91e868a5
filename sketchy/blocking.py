"""How a parameter tensor is reshaped and cut into blocks for Kronecker-factored preconditioning.

A parameter of shape ``s`` is (1) skipped (graft-only) if it has a dimension above
``max_precond_dim``; (2) squeezed of unit dimensions and merged: adjacent dimensions are
multiplied together while the product stays ``<= merge_size`` (default ``block_size``) and
at least two dimensions remain (so a ``3x3x64x64`` kernel is preconditioned as ``576 x 64``,
a ``12x20`` matrix as itself); (3) skipped if fewer than two dimensions remain (biases,
norms), unless ``precondition_1d`` (then a vector gets one ``d x d`` factor, exponent 1/2:
full-matrix AdaGrad/RMSProp on it, as ``distributed_shampoo`` does by default); (4) cut into
blocks: a dimension ``d > block_size`` is split into ``n = ceil(d / block_size)`` equal
blocks of ``ceil(d / n)`` (zero-padded by fewer than ``n`` entries), so every block of a
parameter has the same shape and the per-block work is one ``vmap``. (Equal splitting
rather than ``block_size`` chunks plus a remainder wastes at most ``n - 1`` padded rows,
where padding to a multiple of ``block_size`` can waste ``block_size - 1``.)

Merging and blocking are separate thresholds. Merging up to ``block_size`` (our default)
keeps a merged dim within one block; ``distributed_shampoo`` merges up to 4096 and then
blocks, which turns e.g. ResNet-50's ``3x3x256x256`` kernels into ``2304 x 256`` (three
``768 x 256`` blocks, exponent 1/4) where the default gives ``9 x 256 x 256`` (one block,
exponent 1/6, a 81-entry factor and two ``256 x 256`` ones).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


class BlockPlan(NamedTuple):
    """Static description of how one parameter is preconditioned (hashable, shape-only)."""

    shape: tuple[int, ...]  # original parameter shape
    merged: tuple[int, ...]  # shape after squeezing and merging
    num_blocks: tuple[int, ...]  # blocks per merged dimension
    block_shape: tuple[int, ...]  # shape of every block

    @property
    def total_blocks(self) -> int:
        return math.prod(self.num_blocks)

    @property
    def padded(self) -> tuple[int, ...]:
        return tuple(n * b for n, b in zip(self.num_blocks, self.block_shape, strict=True))


def merge_dims(shape: tuple[int, ...], max_size: int) -> tuple[int, ...]:
    """Drop unit dims, then greedily merge adjacent dims while the product is ``<= max_size``.

    A tensor with two or more non-unit dims keeps at least two (the last dim is never merged
    into a single remaining group): a small matrix stays a matrix, not a vector.
    """
    dims = [d for d in shape if d != 1]
    merged: list[int] = []
    for i, d in enumerate(dims):
        last_into_only_group = i == len(dims) - 1 and len(merged) == 1
        if merged and merged[-1] * d <= max_size and not last_into_only_group:
            merged[-1] *= d
        else:
            merged.append(d)
    return tuple(merged)


def plan_blocks(
    shape: tuple[int, ...],
    block_size: int,
    max_precond_dim: int,
    merge_size: int | None = None,
    precondition_1d: bool = False,
) -> BlockPlan | None:
    """The block plan of a parameter, or ``None`` when it is graft-only.

    ``merge_size`` (default ``block_size``) bounds the product of merged dims;
    ``precondition_1d`` preconditions a parameter that merges to one dim as a vector.
    """
    shape = tuple(int(d) for d in shape)
    if any(d > max_precond_dim for d in shape):
        return None
    merged = merge_dims(shape, block_size if merge_size is None else merge_size)
    if len(merged) < (1 if precondition_1d else 2):
        return None
    num_blocks = tuple(-(-d // block_size) for d in merged)
    block_shape = tuple(-(-d // n) for d, n in zip(merged, num_blocks, strict=True))
    return BlockPlan(shape, merged, num_blocks, block_shape)


def to_blocks(x: jax.Array, plan: BlockPlan) -> jax.Array:
    """``x`` (parameter-shaped) -> ``[total_blocks, *block_shape]``."""
    x = x.reshape(plan.merged)
    pad = [(0, p - d) for p, d in zip(plan.padded, plan.merged, strict=True)]
    if any(hi for _, hi in pad):
        x = jnp.pad(x, pad)
    p = len(plan.merged)
    interleaved = [v for nb in zip(plan.num_blocks, plan.block_shape, strict=True) for v in nb]
    x = x.reshape(interleaved)
    # (n0, b0, n1, b1, ...) -> (n0, n1, ..., b0, b1, ...)
    x = x.transpose([2 * i for i in range(p)] + [2 * i + 1 for i in range(p)])
    return x.reshape((plan.total_blocks, *plan.block_shape))


def from_blocks(blocks: jax.Array, plan: BlockPlan) -> jax.Array:
    """Inverse of :func:`to_blocks`."""
    p = len(plan.merged)
    x = blocks.reshape((*plan.num_blocks, *plan.block_shape))
    order = [v for i in range(p) for v in (i, p + i)]
    x = x.transpose(order).reshape(plan.padded)
    x = x[tuple(slice(0, d) for d in plan.merged)]
    return x.reshape(plan.shape)


def matricize(block: jax.Array, axis: int) -> jax.Array:
    """``[b0, ..., bp]`` -> ``[b_axis, prod(others)]`` (the axis' rows, all else as columns)."""
    return jnp.moveaxis(block, axis, 0).reshape(block.shape[axis], -1)


def apply_along_axis(fn, block: jax.Array, axis: int) -> jax.Array:
    """The mode-``axis`` product ``block x_axis P`` when ``fn`` applies ``P`` (see below).

    ``fn`` gets ``block`` reshaped to ``[A, d, B]`` (``A``: the product of the dims before
    ``axis``, ``d = block.shape[axis]``, ``B``: the product after it) and returns
    ``[A, p, B]``, ``P`` (``p x d``) applied along the middle axis (:func:`mode_product`
    does it for a matrix); the result has ``p`` in place of ``d``. Why not ``moveaxis`` to
    ``[d, n]``: the reshape is free in row-major order, while moving an axis copies the
    whole block twice (in and out), which made a low-rank apply (two thin matmuls and an
    add) run at half the speed of its matmuls.
    """
    shape = block.shape
    folded = block.reshape(math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :]))
    out = fn(folded)
    return out.reshape(*shape[:axis], out.shape[1], *shape[axis + 1 :])


def mode_product(m: jax.Array, y: jax.Array, *, transpose: bool = False) -> jax.Array:
    """``m`` (or ``m^T``) applied to the middle axis of ``y`` (``[A, q, B]`` -> ``[A, p, B]``).

    ``out[a, :, b] = m @ y[a, :, b]`` for ``m`` of shape ``[p, q]`` (``transpose``: ``m^T``
    with ``m`` of shape ``[q, p]``), in float32's highest precision. The product is written
    so that XLA needs no transposed copy of ``y`` or of the output: ``m @ y[0]`` when
    ``A = 1`` (the first axis), ``y[:, :, 0] @ m^T`` when ``B = 1`` (the last axis), else a
    batched matmul over ``A`` with ``m`` broadcast (a middle axis of an order-3 block).
    """
    mat = m.T if transpose else m
    a, _, b = y.shape
    if a == 1:
        return jnp.matmul(mat, y[0], precision=HIGHEST)[None]
    if b == 1:
        return jnp.matmul(y[:, :, 0], mat.T, precision=HIGHEST)[:, :, None]
    batched = jnp.broadcast_to(mat, (a, *mat.shape))
    return jax.lax.dot_general(batched, y, (((2,), (1,)), ((0,), (0,))), precision=HIGHEST)
