"""Which parameters share a block shape, and how their blocks are stacked (static, shapes only).

:func:`plan_layout` plans every leaf with :func:`sketchy.blocking.plan_blocks` and groups
the leaves whose blocks have the same shape: the blocks of a group are stacked on a leading
axis (:func:`gather_blocks`) so that every per-block computation of the group is one
``vmap`` (one decomposition per (group, axis) in the compiled program instead of one per
leaf), and :func:`scatter_blocks` puts them back into parameter shape.

Per-parameter ranks (Sketchy's ``factor_ranks``, :func:`resolve_ranks`): a stacked factor
array has one shape, so leaves with the same block shape but different per-axis ranks go to
different groups. A leaf at the rule's default rank keeps the plain key ``"d0xd1"`` (uniform
rank: the keys, and so states and checkpoints, are those of a layout without ranks); a leaf
with its own ranks ``(r0, r1)`` goes to ``"d0xd1:r0xr1"``.
"""

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sketchy.blocking import from_blocks, plan_blocks, to_blocks


def _group_key(block_shape: tuple[int, ...], ranks: tuple[int, ...] | None = None) -> str:
    key = "x".join(str(d) for d in block_shape)
    return key if ranks is None else key + ":r" + "x".join(str(r) for r in ranks)


class Layout(NamedTuple):
    """How the leaves of a gradient pytree are preconditioned; static (shapes only).

    Attributes:
      plans: per leaf, its :class:`BlockPlan` or ``None`` (graft-only).
      groups: ``{block shape key: leaf indices}``: every leaf whose blocks have that shape,
        in flattening order. Their blocks are stacked and go through one ``vmap``: one
        decomposition per (group, axis) in the compiled program instead of one per leaf.
      exponents: ``{block shape key: root exponent}``: ``1/(2p)`` for order ``p``, or overridden.
      ranks: ``{key: per-axis ranks}`` of the groups whose leaves have their own ranks (see
        :func:`resolve_ranks`); a group not listed uses the rule's default rank.
    """

    plans: tuple
    groups: dict[str, tuple[int, ...]]
    exponents: dict[str, float]
    ranks: dict[str, tuple[int, ...]] = {}


def plan_layout(
    shapes,
    *,
    block_size: int,
    max_precond_dim: int,
    max_merged_dim: int | None = None,
    precondition_1d: bool = False,
    exponent_override: float | None = None,
    paths: Sequence[str] | None = None,
    factor_ranks: Mapping[str, int | Sequence[int]] | None = None,
    default_rank: int | None = None,
) -> Layout:
    """The :class:`Layout` of leaves with these shapes (see :func:`plan_blocks`).

    ``factor_ranks`` (with the leaves' ``paths`` and the rule's ``default_rank``): per-leaf
    ranks, resolved by :func:`resolve_ranks`; leaves of one block shape and different ranks
    are separate groups.
    """
    plans = tuple(
        plan_blocks(s, block_size, max_precond_dim, max_merged_dim, precondition_1d) for s in shapes
    )
    leaf_ranks = [None] * len(plans)
    if factor_ranks:
        leaf_ranks = resolve_ranks(paths, plans, factor_ranks, default_rank)
    groups: dict[str, list[int]] = {}
    ranks: dict[str, tuple[int, ...]] = {}
    for i, plan in enumerate(plans):
        if plan is not None:
            key = _group_key(plan.block_shape, leaf_ranks[i])
            groups.setdefault(key, []).append(i)
            if leaf_ranks[i] is not None:
                ranks[key] = leaf_ranks[i]
    exponents = {
        key: exponent_override or 1.0 / (2 * len(plans[members[0]].merged))
        for key, members in groups.items()
    }
    return Layout(plans, {k: tuple(v) for k, v in groups.items()}, exponents, ranks)


def resolve_ranks(
    paths: Sequence[str] | None,
    plans: Sequence,
    factor_ranks: Mapping[str, int | Sequence[int]],
    default_rank: int | None,
) -> list[tuple[int, ...] | None]:
    """Per leaf: its per-axis ranks, or ``None`` where they are the default's.

    ``factor_ranks[path]`` is one rank for every axis or one per axis of the leaf's merged
    (= block) shape ``(b_0, ..., b_{p-1})``; leaves not named use ``default_rank``. Each
    rank is capped at its axis, ``r_i -> min(r_i, b_i)``, as ``fd_init`` does, and a leaf
    whose capped ranks equal ``min(default_rank, b_i)`` on every axis is ``None``: it
    stays in the default group.

    Raises:
      ValueError (one line): the rule has no rank, a path is not a leaf or is graft-only,
        a rank is not an integer >= 1, or a sequence has the wrong number of axes.
    """
    if default_rank is None:
        raise ValueError("factor_ranks: this preconditioner has no rank (Sketchy only)")
    index = {path: i for i, path in enumerate(paths or ())}
    out: list[tuple[int, ...] | None] = [None] * len(plans)
    for path, value in factor_ranks.items():
        if path not in index:
            known = ", ".join(list(index)[:4]) + (", ..." if len(index) > 4 else "")
            raise ValueError(f"factor_ranks: unknown parameter path {path!r} (paths: {known})")
        plan = plans[index[path]]
        if plan is None:
            raise ValueError(f"factor_ranks: {path} is graft-only (no Kronecker factors)")
        shape = plan.block_shape
        ranks = (value,) * len(shape) if isinstance(value, Integral) else tuple(value)
        if len(ranks) != len(shape) or not all(isinstance(r, Integral) and r >= 1 for r in ranks):
            raise ValueError(
                f"factor_ranks: {path} needs one rank >= 1 or {len(shape)} (one per axis of "
                f"its block shape {shape}), got {value!r}"
            )
        capped = tuple(min(int(r), b) for r, b in zip(ranks, shape, strict=True))
        default = tuple(min(default_rank, b) for b in shape)
        out[index[path]] = None if capped == default else capped
    return out


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


def leaf_slices(layout: Layout) -> dict[int, tuple[str, int, int]]:
    """``{leaf index: (group key, start, stop)}``: where each leaf's blocks sit in its group's
    stacked axis (the order :func:`gather_blocks` stacks them)."""
    out = {}
    for key, members in layout.groups.items():
        offset = 0
        for i in members:
            n = layout.plans[i].total_blocks
            out[i] = (key, offset, offset + n)
            offset += n
    return out


def scatter_blocks(blocks: dict[str, jax.Array], layout: Layout) -> dict[int, jax.Array]:
    """Inverse of :func:`gather_blocks`: ``{leaf index: parameter-shaped array}``."""
    return {
        i: from_blocks(blocks[key][start:stop], layout.plans[i])
        for i, (key, start, stop) in leaf_slices(layout).items()
    }
