"""Which parameters share a block shape, and how their blocks are stacked (static, shapes only).

:func:`plan_layout` plans every leaf with :func:`sketchy.blocking.plan_blocks` and groups
the leaves whose blocks have the same shape: the blocks of a group are stacked on a leading
axis (:func:`gather_blocks`) so that every per-block computation of the group is one
``vmap`` (one decomposition per (group, axis) in the compiled program instead of one per
leaf), and :func:`scatter_blocks` puts them back into parameter shape.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sketchy.blocking import from_blocks, plan_blocks, to_blocks


def _group_key(block_shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in block_shape)


class Layout(NamedTuple):
    """How the leaves of a gradient pytree are preconditioned; static (shapes only).

    Attributes:
      plans: per leaf, its :class:`BlockPlan` or ``None`` (graft-only).
      groups: ``{block shape key: leaf indices}``: every leaf whose blocks have that shape,
        in flattening order. Their blocks are stacked and go through one ``vmap``: one
        decomposition per (group, axis) in the compiled program instead of one per leaf.
      exponents: ``{block shape key: root exponent}``: ``1/(2p)`` for order ``p``, or overridden.
    """

    plans: tuple
    groups: dict[str, tuple[int, ...]]
    exponents: dict[str, float]


def plan_layout(
    shapes,
    *,
    block_size: int,
    max_precond_dim: int,
    max_merged_dim: int | None = None,
    precondition_1d: bool = False,
    exponent_override: float | None = None,
) -> Layout:
    """The :class:`Layout` of leaves with these shapes (see :func:`plan_blocks`)."""
    plans = tuple(
        plan_blocks(s, block_size, max_precond_dim, max_merged_dim, precondition_1d) for s in shapes
    )
    groups: dict[str, list[int]] = {}
    for i, plan in enumerate(plans):
        if plan is not None:
            groups.setdefault(_group_key(plan.block_shape), []).append(i)
    exponents = {
        key: exponent_override or 1.0 / (2 * len(plans[members[0]].merged))
        for key, members in groups.items()
    }
    return Layout(plans, {k: tuple(v) for k, v in groups.items()}, exponents)


def gather_blocks(leaves, layout: Layout) -> dict[str, jax.Array]:
    """``{key: [blocks of every member leaf, *block_shape]}``, in float32 at least."""
    return {
        key: jnp.concatenate(
            [
                # float32 at least (bf16 gradients), float64 kept when x64 is on.
                to_blocks(
                    leaves[i].astype(jnp.promote_types(leaves[i].dtype, jnp.float32)),
                    layout.plans[i],
                )
                for i in members
            ]
        )
        for key, members in layout.groups.items()
    }


def scatter_blocks(blocks: dict[str, jax.Array], layout: Layout) -> dict[int, jax.Array]:
    """Inverse of :func:`gather_blocks`: ``{leaf index: parameter-shaped array}``."""
    out: dict[int, jax.Array] = {}
    for key, members in layout.groups.items():
        offset = 0
        for i in members:
            n = layout.plans[i].total_blocks
            out[i] = from_blocks(blocks[key][offset : offset + n], layout.plans[i])
            offset += n
    return out
