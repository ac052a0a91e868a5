"""The machinery shared by every Kronecker-factored preconditioner (Shampoo, Sketchy, KrADagrad).

A *rule* says how one Kronecker factor (one axis of one block) is kept: its state, how a
gradient block updates it, how its inverse root is refreshed and how it is applied. This
module does everything else, once: blocking and merging (:mod:`sketchy.blocking`), ``vmap``
over the blocks of a parameter, the statistics/refresh schedule, the order-``p`` exponent
``1/(2p)``, grafting, ``start_preconditioning_step``, graft-only parameters, failure
counting and the non-finite policy.

Non-finite policy: if any gradient entry is NaN/Inf, the statistics step and the graft
accumulators are skipped (their state is left exactly as it was) and ``nonfinite_steps``
is incremented; a decomposition that fails or returns non-finite values keeps the previous
factor state and increments ``failures``. The update is still computed from the gradient;
:func:`sketchy.optimizer_chain.apply_if_finite` (around every optimizer here) skips it.
"""

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from sketchy.blocking import apply_along_axis, matricize
from sketchy.grafting import graft_norm
from sketchy.layout import Layout, gather_blocks, plan_layout, scatter_blocks

FactorState = Any  # a NamedTuple of arrays, one per (block, axis)


class KroneckerRule(NamedTuple):
    """How one Kronecker factor is kept; every function acts on one block (no batch dim).

    Attributes:
      init_factor: ``d -> factor state`` for an axis of size ``d``; ``(d, r)``: at rank ``r``.
      update_block: ``(factors, block, count) -> (factors, num_failed)``: the statistics
        step for one block (a tuple of factor states, one per axis). Use
        :func:`per_axis_update` when axes are independent.
      refresh_factor: ``(factor, exponent) -> (factor, failed)``: recompute the inverse root
        ``(.)^(-exponent)``; on failure return the input unchanged. ``None``: no refresh
        (the statistics step keeps the factor ready to apply).
      apply_factor: ``(factor, y, exponent) -> y``: multiply ``y`` (``[A, d, B]``, the axis
        in the middle, see :func:`sketchy.blocking.apply_along_axis`) along its middle axis
        by the factor's inverse root (:func:`sketchy.blocking.mode_product`).
      stats_every: run ``update_block`` when ``count % stats_every == 0``.
      refresh_every: run ``refresh_factor`` when ``count % refresh_every == 0`` (after the
        statistics step of the same count).
      statistics_decompose: ``update_block`` runs a decomposition (an FD step), so it is
        split over devices by blocks like the refresh (:func:`map_blocks`); a product
        update (Shampoo's ``G G^T``) is not: XLA splits it along a matrix dim as stored.
      rank: a sketching rule's default rank (Sketchy's ``k``); ``None``: no ``factor_ranks``.
    """

    init_factor: Callable[..., FactorState]  # (d) or (d, rank)
    update_block: Callable[[tuple, jax.Array, jax.Array], tuple[tuple, jax.Array]]
    refresh_factor: Callable[[FactorState, float], tuple[FactorState, jax.Array]] | None
    apply_factor: Callable[[FactorState, jax.Array, float], jax.Array]
    stats_every: int
    refresh_every: int
    statistics_decompose: bool = False
    rank: int | None = None


class KroneckerState(NamedTuple):
    """State of :func:`scale_by_kronecker`.

    Attributes:
      count: number of updates so far.
      graft: the graft transform's optax state.
      factors: ``{block shape "d0xd1x...": tuple of per-axis factor states}``; each factor
        state has a leading dimension over the blocks of every parameter with that block
        shape and ranks (in flattening order; own ranks: key ``"d0xd1:r0xr1"``, see
        :mod:`sketchy.layout`). Graft-only parameters have none.
      failures: decompositions that failed or were non-finite (previous state kept).
      nonfinite_steps: steps whose gradient was not finite (statistics not updated).
    """

    count: jax.Array
    graft: optax.OptState
    factors: list
    failures: jax.Array
    nonfinite_steps: jax.Array


def per_axis_update(update_factor: Callable[[FactorState, jax.Array], tuple[FactorState, Any]]):
    """``update_block`` from a per-axis ``(factor, x[d, n]) -> (factor, failed)``."""

    def update_block(factors, block, count):
        del count
        new, failed = [], jnp.zeros((), jnp.int32)
        for axis, factor in enumerate(factors):
            f, bad = update_factor(factor, matricize(block, axis))
            new.append(f)
            failed = failed + jnp.asarray(bad, jnp.int32)
        return tuple(new), failed

    return update_block


def keep_if(ok: jax.Array, new: FactorState, old: FactorState) -> FactorState:
    """``new`` where ``ok`` else ``old``, leaf by leaf (a failed step never writes its output)."""
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def all_finite(leaves) -> jax.Array:
    """Whether every entry of every array in ``leaves`` is finite, as one boolean scalar.

    ``x * 0`` is ``0`` for finite ``x`` and NaN for ``+-inf`` or NaN, so ``sum(x * 0)`` is
    finite iff every entry is (no overflow: the summands are zeros). Same answer as
    ``all(isfinite(x))``, but a float sum-reduction: XLA's CPU backend expands predicate
    ``and``-reductions of large arrays into far more code (ResNet-50's 161 tensors: 26,580
    ``and`` instructions, 3x the compile time). The barrier makes XLA compute the flag once:
    its fusion pass would copy the whole sum into every consumer's fusion (26,000 adds).
    """
    total = sum(jnp.sum(x * jnp.zeros((), x.dtype), dtype=jnp.float32) for x in leaves)
    return jax.lax.optimization_barrier(jnp.isfinite(jnp.asarray(total, jnp.float32)))


def validate_b2(b2) -> None:
    if not 0.0 < b2 <= 1.0:
        raise ValueError(f"b2 must be in (0, 1], got {b2!r}")


def validate_update_freq(update_freq) -> None:
    if not isinstance(update_freq, int) or update_freq < 1:
        raise ValueError(f"update_freq must be an integer >= 1, got {update_freq!r}")


def _validate_layout(*, block_size, start_preconditioning_step, max_precond_dim, max_merged_dim):
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    if max_merged_dim is not None and (not isinstance(max_merged_dim, int) or max_merged_dim < 1):
        raise ValueError(f"max_merged_dim must be None or an integer >= 1, got {max_merged_dim!r}")
    if start_preconditioning_step < 0:
        raise ValueError(
            f"start_preconditioning_step must be >= 0, got {start_preconditioning_step!r}"
        )
    if max_precond_dim < 1:
        raise ValueError(f"max_precond_dim must be >= 1, got {max_precond_dim!r}")


def init_factors(rule: KroneckerRule, layout: Layout) -> dict:
    """``{key: per-axis factor states}``, each stacked over the group's blocks."""
    factors = {}
    for key, members in layout.groups.items():
        n, ranks = sum(layout.plans[i].total_blocks for i in members), layout.ranks.get(key)
        one = [
            rule.init_factor(d) if ranks is None else rule.init_factor(d, ranks[axis])
            for axis, d in enumerate(layout.plans[members[0]].block_shape)
        ]
        factors[key] = tuple(
            jax.tree.map(lambda a, n=n: jnp.broadcast_to(a, (n, *a.shape)), f) for f in one
        )
    return factors


def map_blocks(fn: Callable, stacked, block_sharding: NamedSharding | None = None):
    """``vmap(fn)(*stacked)`` over the leading (block) axis of every array in ``stacked``.

    With ``block_sharding`` (a sharding whose spec splits the leading axis over mesh axes of
    total size ``N``), the blocks are padded with zero blocks to a multiple of ``N`` and laid
    out along those axes first, so each device runs ``fn`` (a decomposition) on its own
    ``ceil(n / N)`` blocks; the outputs are cut back to the ``n`` real blocks. Why: XLA
    splits an axis only where ``N`` divides it, so a group of, say, 3 blocks on 8 devices is
    stored split along a matrix dimension, and each device would gather every factor whole
    and repeat every decomposition. The padded blocks cost their decomposition and nothing
    else (their outputs, failure flags included, are dropped).
    """
    if block_sharding is None:
        return jax.vmap(fn)(*stacked)
    entry = block_sharding.spec[0] if block_sharding.spec else None
    names = (entry,) if isinstance(entry, str) else tuple(entry or ())
    size = math.prod(block_sharding.mesh.shape[a] for a in names)
    n = jax.tree.leaves(stacked)[0].shape[0]
    pad = -n % size

    def lay_out(x):
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)) if pad else x
        return jax.lax.with_sharding_constraint(x, block_sharding)

    out = jax.vmap(fn)(*jax.tree.map(lay_out, stacked))
    return jax.tree.map(lambda x: x[:n], out)


def statistics_step(
    rule: KroneckerRule, factors: dict, blocks: dict, count, block_sharding=None
) -> tuple[dict, Any]:
    """``rule.update_block`` on every block of every group (split over devices by
    ``block_sharding``, see :func:`map_blocks`); returns the failure count."""
    factors, failed = dict(factors), jnp.zeros((), jnp.int32)
    for key, group_blocks in blocks.items():
        new, bad = map_blocks(
            lambda f, b: rule.update_block(f, b, count),
            (factors[key], group_blocks),
            block_sharding,
        )
        factors[key], failed = new, failed + jnp.sum(bad, dtype=jnp.int32)
    return factors, failed


def refresh_step(
    rule: KroneckerRule, factors: dict, exponents: dict, block_sharding=None
) -> tuple[dict, Any]:
    """``rule.refresh_factor`` on every factor (every block, every axis) of every group
    (split over devices by ``block_sharding``, see :func:`map_blocks`)."""
    factors, failed = dict(factors), jnp.zeros((), jnp.int32)
    for key, e in exponents.items():
        new = []
        for f in factors[key]:
            g, bad = map_blocks(lambda x, e=e: rule.refresh_factor(x, e), (f,), block_sharding)
            new.append(g)
            failed = failed + jnp.sum(jnp.asarray(bad, jnp.int32), dtype=jnp.int32)
        factors[key] = tuple(new)
    return factors, failed


def precondition(rule: KroneckerRule, factors: dict, blocks: dict, exponents: dict) -> dict:
    """``G x_1 P_1 ... x_p P_p`` for every block: each axis' factor applied along its axis."""

    def one_block(fs, block, e):
        for axis, f in enumerate(fs):
            block = apply_along_axis(lambda y, f=f: rule.apply_factor(f, y, e), block, axis)
        return block

    return {
        key: jax.vmap(lambda fs, b, e=exponents[key]: one_block(fs, b, e))(factors[key], group)
        for key, group in blocks.items()
    }


def apply_graft(leaves, directions: dict[int, jax.Array], graft_leaves, *, rescale: bool, active):
    """Per leaf: the preconditioned direction rescaled to the graft direction's norm
    (``rescale``) where ``active``, else (and for graft-only leaves) the graft direction."""
    out = []
    for i, (g, gd) in enumerate(zip(leaves, graft_leaves, strict=True)):
        if i not in directions:
            out.append(gd.astype(g.dtype))
            continue
        direction = graft_norm(directions[i], gd) if rescale else directions[i]
        out.append(jnp.where(active, direction, gd).astype(g.dtype))
    return out


def update_factors(
    rule: KroneckerRule,
    factors: dict,
    blocks: dict,
    layout: Layout,
    count,
    finite,
    block_sharding: NamedSharding | None = None,
    leaves=None,
):
    """:func:`statistics_step` every ``rule.stats_every`` steps (not if the gradient is not
    ``finite``), :func:`refresh_step` every ``rule.refresh_every``; returns the factors and
    failures. Statistics not run every step (Sketchy's FD) stack ``leaves`` in the branch,
    not take ``blocks`` in (measured, ResNet-50 Sketchy r256: FD step -15-25%, amortized -8-11%)."""
    restack = leaves is not None and rule.stats_every > 1
    gather = (lambda: gather_blocks(leaves, layout)) if restack else lambda: blocks
    factors, failed_stats = jax.lax.cond(
        finite & (count % rule.stats_every == 0),
        lambda fs: statistics_step(
            rule, fs, gather(), count, block_sharding if rule.statistics_decompose else None
        ),
        _unchanged,
        factors,
    )
    if rule.refresh_factor is None:  # nothing to refresh (Sketchy: the FD step is all)
        return factors, failed_stats
    factors, failed_refresh = jax.lax.cond(
        count % rule.refresh_every == 0,
        lambda fs: refresh_step(rule, fs, layout.exponents, block_sharding),
        _unchanged,
        factors,
    )
    return factors, failed_stats + failed_refresh


_unchanged = lambda factors: (dict(factors), jnp.zeros((), jnp.int32))  # noqa: E731


def scale_by_kronecker(
    rule: KroneckerRule,
    *,
    graft: optax.GradientTransformation | None,
    block_size: int = 1024,
    max_precond_dim: int = 4096,
    start_preconditioning_step: int = 0,
    exponent_override: float | None = None,
    max_merged_dim: int | None = None,
    precondition_1d: bool = False,
    block_sharding: NamedSharding | None = None,
    factor_ranks: Mapping[str, Any] | None = None,
) -> optax.GradientTransformation:
    """Precondition every axis of every block with ``rule``, then graft (see module doc).

    For a parameter whose merged shape has ``p`` dimensions, per block::

        D = G x_1 P_1 x_2 P_2 ... x_p P_p,     update = D ||graft(G)|| / ||D||

    with ``P_i`` the factor's inverse root of exponent ``1/(2p)`` (or ``exponent_override``)
    and ``graft`` any scale-only optax transform (:func:`sketchy.grafting.as_graft` builds
    the named ones); ``graft=None`` leaves ``D`` unscaled and uses the gradient itself
    where a graft direction is needed. Before ``start_preconditioning_step`` and for
    graft-only parameters the update is the graft direction. ``max_merged_dim`` (default
    ``block_size``) and ``precondition_1d`` are the merging and vector options of
    :func:`sketchy.blocking.plan_blocks`. ``block_sharding`` (optional, for a state split
    over a device mesh) splits the statistics and refresh decompositions over devices by
    blocks (:func:`map_blocks`); it changes where they run, not what they compute.
    ``factor_ranks`` (rules with a ``rank`` only): ``{jax.tree_util.keystr(path): ranks}``
    per parameter, see :func:`sketchy.layout.resolve_ranks`; checked at ``init``.

    Each step, in order: the graft direction; :func:`update_factors` (the statistics and
    refresh steps on their schedules); :func:`precondition`; :func:`apply_graft`.
    """
    _validate_layout(
        block_size=block_size,
        start_preconditioning_step=start_preconditioning_step,
        max_precond_dim=max_precond_dim,
        max_merged_dim=max_merged_dim,
    )
    graft_tx = optax.identity() if graft is None else graft

    layout = functools.partial(
        plan_layout,
        block_size=block_size,
        max_precond_dim=max_precond_dim,
        max_merged_dim=max_merged_dim,
        precondition_1d=precondition_1d,
        exponent_override=exponent_override,
        factor_ranks=factor_ranks,
        default_rank=rule.rank,
    )

    def plan(tree):  # paths only when needed: factor_ranks names parameters by path
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        paths = [jax.tree_util.keystr(p) for p, _ in flat] if factor_ranks else None
        return layout([x.shape for _, x in flat], paths=paths)

    def init_fn(params):
        factors = init_factors(rule, plan(params))
        # Distinct buffers: a donated state must not alias one array in several fields.
        zero = lambda: jnp.zeros((), jnp.int32)  # noqa: E731
        return KroneckerState(zero(), graft_tx.init(params), factors, zero(), zero())

    def update_fn(updates, state, params=None):
        leaves, treedef = jax.tree.flatten(updates)
        lay, count = plan(updates), state.count
        finite = all_finite(leaves)

        graft_dirs, graft_state = graft_tx.update(updates, state.graft, params)
        graft_state = keep_if(finite, graft_state, state.graft)

        blocks = gather_blocks(leaves, lay)
        factors, failed = update_factors(
            rule, dict(state.factors), blocks, lay, count, finite, block_sharding, leaves
        )
        directions = scatter_blocks(precondition(rule, factors, blocks, lay.exponents), lay)
        active = count >= start_preconditioning_step
        graft_leaves = jax.tree.leaves(graft_dirs)
        out = apply_graft(
            leaves, directions, graft_leaves, rescale=graft is not None, active=active
        )
        new_state = KroneckerState(
            count=optax.safe_increment(count),
            graft=graft_state,
            factors=factors,
            failures=state.failures + failed,
            nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
        )
        return jax.tree.unflatten(treedef, out), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def optimizer_counters(opt_state) -> dict[str, int]:
    """Failure and skip counters found anywhere in an optimizer state (for logging).

    ``decomposition_failures`` and ``nonfinite_grad_steps`` from every
    :class:`KroneckerState`; ``skipped_steps`` from :func:`optax.apply_if_finite`.
    """
    counters: dict[str, int] = {}

    def add(key, value):
        counters[key] = counters.get(key, 0) + int(value)

    is_node = lambda x: isinstance(x, KroneckerState | optax.ApplyIfFiniteState)  # noqa: E731
    for node in jax.tree.leaves(opt_state, is_leaf=is_node):
        if isinstance(node, KroneckerState):
            add("decomposition_failures", node.failures)
            add("nonfinite_grad_steps", node.nonfinite_steps)
        elif isinstance(node, optax.ApplyIfFiniteState):
            add("skipped_steps", node.total_notfinite)
            # is_leaf stops here, so the states it wraps are visited explicitly.
            for key, value in optimizer_counters(node.inner_state).items():
                add(key, value)
    return counters
