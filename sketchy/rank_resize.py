"""Changing Sketchy's per-parameter ranks in a live optimizer state (issue 16, ``rank: auto``).

:func:`sketchy.sketchy` with ``factor_ranks`` keeps a rank per (parameter, axis); this module
moves a running state from one assignment to another. Each factor's blocks are cut out of
their old group (a stacked ``[nblocks, d, k]`` array shared with other parameters of that
block shape and rank), truncated by :func:`sketchy.rank_budget.fd_truncate` (FD's sandwich
``Gbar <= G <= Gbar + tail I`` survives: the cut moves into the tail) and stacked into the
new group. Everything else in the state (counts, graft, momentum, failure counters) is kept
as it was.

Both functions need the layout the optimizer was built with: pass the same keyword arguments
(``rank``, ``block_size``, ``max_precond_dim``, ``max_merged_dim``, ``precondition_1d``;
any other argument of :func:`sketchy.sketchy` is accepted and ignored, so a trainer can pass
its whole optimizer config). The switch, for a trainer::

    kw = dict(rank=k_warm, block_size=..., ...)  # what tx_old was built with
    spectra = factor_spectra(state, params, **kw)  # {(path, axis): FactorSpectrum}
    ranks = allocate_ranks(spectra, budget_of_uniform_rank(spectra, 16))
    new_ranks = as_factor_ranks(ranks)  # {path: (r_0, ..., r_{p-1})}
    tx_new = sketchy.sketchy(lr, factor_ranks=new_ranks, **kw)
    state = resize_state(state, params, new_ranks, **kw)  # == eval_shape(tx_new.init) in shapes

then re-jit the step with ``tx_new`` (new shapes: one re-trace) and put the state on its
shardings again (the concatenations here do not keep them).
"""

import inspect
from collections.abc import Hashable, Mapping, Sequence

import jax
import jax.numpy as jnp

from sketchy.frequent_directions import FDState
from sketchy.kronecker import KroneckerState
from sketchy.layout import Layout, leaf_slices, plan_layout
from sketchy.rank_budget import FactorSpectrum, factor_spectrum, fd_truncate
from sketchy.sketchy import sketchy as _sketchy

FactorRanks = Mapping[str, int | Sequence[int]]
_LAYOUT_OPTIONS = ("rank", "block_size", "max_precond_dim", "max_merged_dim", "precondition_1d")


def _layout(params, factor_ranks: FactorRanks | None, options: dict) -> tuple[list[str], Layout]:
    """The leaves' paths and the :class:`Layout` ``sketchy.sketchy(**options)`` plans."""
    signature = inspect.signature(_sketchy).parameters
    unknown = sorted(set(options) - set(signature))
    if unknown:
        raise ValueError(f"rank_resize: {unknown} are not arguments of sketchy.sketchy")
    kw = {name: options.get(name, signature[name].default) for name in _LAYOUT_OPTIONS}
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = [jax.tree_util.keystr(p) for p, _ in flat]
    layout = plan_layout(
        [x.shape for _, x in flat],
        block_size=kw["block_size"],
        max_precond_dim=kw["max_precond_dim"],
        max_merged_dim=kw["max_merged_dim"],
        precondition_1d=kw["precondition_1d"],
        paths=paths,
        factor_ranks=factor_ranks,
        default_rank=kw["rank"],
    )
    return paths, layout


def kronecker_state(opt_state) -> KroneckerState:
    """The one :class:`KroneckerState` inside ``opt_state`` (e.g. a ``sketchy.sketchy`` chain)."""
    is_node = lambda x: isinstance(x, KroneckerState)  # noqa: E731
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_node) if is_node(x)]
    if len(found) != 1:
        raise ValueError(f"rank_resize: need exactly one KroneckerState, found {len(found)}")
    return found[0]


def _per_leaf(factors: Mapping, layout: Layout) -> dict[int, tuple]:
    """``{leaf index: per-axis factor states of that leaf's blocks only}`` (its slice of its
    group, :func:`sketchy.layout.leaf_slices`)."""
    for key, members in layout.groups.items():
        if key not in factors:
            raise ValueError(f"rank_resize: the state has no group {key!r}: wrong ranks/options")
        stacked = jax.tree.leaves(factors[key])[0].shape[0]
        expected = sum(layout.plans[i].total_blocks for i in members)
        if expected != stacked:
            raise ValueError(f"rank_resize: group {key!r} has {stacked} blocks, layout {expected}")
    return {
        i: tuple(jax.tree.map(lambda a, lo=lo, hi=hi: a[lo:hi], f) for f in factors[key])
        for i, (key, lo, hi) in leaf_slices(layout).items()
    }


def param_factors(
    opt_state, params, factor_ranks: FactorRanks | None = None, **options
) -> dict[tuple[str, int], FDState]:
    """``{(param path, axis): sketch}`` of every sketched factor of ``opt_state``, each with
    leading dim ``[nblocks]`` over that parameter's own blocks (``to_blocks`` order).
    ``factor_ranks`` and ``options``: what the optimizer was built with."""
    paths, layout = _layout(params, factor_ranks, options)
    per_leaf = _per_leaf(kronecker_state(opt_state).factors, layout)
    return {(paths[i], a): f for i in sorted(per_leaf) for a, f in enumerate(per_leaf[i])}


def factor_spectra(
    opt_state, params, factor_ranks: FactorRanks | None = None, **options
) -> dict[tuple[str, int], FactorSpectrum]:
    """``{(param path, axis): FactorSpectrum}`` (one spectrum per block) of every factor of
    :func:`param_factors`: the unit :func:`sketchy.rank_budget.allocate_ranks` ranks."""
    factors = param_factors(opt_state, params, factor_ranks, **options)
    return {key: factor_spectrum(f) for key, f in factors.items()}


def as_factor_ranks(ranks: Mapping[tuple[str, Hashable], int]) -> dict[str, tuple[int, ...]]:
    """``{(path, axis): r}`` (e.g. :func:`allocate_ranks` on :func:`factor_spectra`) ->
    ``factor_ranks`` ``{path: (r_0, ..., r_{p-1})}``; every axis of a path must be there."""
    by_path: dict[str, dict] = {}
    for (path, axis), r in ranks.items():
        by_path.setdefault(path, {})[axis] = int(r)
    out = {}
    for path, axes in by_path.items():
        if sorted(axes) != list(range(len(axes))):
            raise ValueError(f"as_factor_ranks: {path} has axes {sorted(axes)}, need 0..p-1")
        out[path] = tuple(axes[a] for a in range(len(axes)))
    return out


def _resized(f: FDState, k_new: int, where: str) -> FDState:
    if not isinstance(f, FDState):
        raise ValueError(f"rank_resize: {where} is a {type(f).__name__}, not a Sketchy sketch")
    k_old = f.eigvecs.shape[-1]
    if k_new > k_old:
        raise ValueError(f"rank_resize: {where}: rank {k_old} -> {k_new} (truncation only)")
    return fd_truncate(f, k_new)


def resize_state(
    opt_state,
    params,
    new_factor_ranks: FactorRanks | None,
    *,
    old_factor_ranks: FactorRanks | None = None,
    **options,
):
    """``opt_state`` of ``sketchy.sketchy(factor_ranks=old_factor_ranks, **options)`` turned
    into a state of ``sketchy.sketchy(factor_ranks=new_factor_ranks, **options)``.

    Per parameter and axis with old rank ``k1`` and new rank ``k2`` (both capped at ``d``):
    its blocks' sketches become ``fd_truncate(., k2)`` (``lam_i - lam_{k2+1}`` on the top
    ``k2`` directions, ``tail + lam_{k2+1}``: the sandwich holds per block), regrouped as the
    new layout stacks them. The result has the structure, shapes and dtypes of
    ``jax.eval_shape(tx_new.init, params)``; every array outside the factors is the old one.
    ``None`` ranks: uniform ``options["rank"]``. Not jitted (shapes change); each
    ``fd_truncate`` is a few small array ops.

    Raises:
      ValueError (one line): a rank would grow, the state does not match the old layout or
        has no (or several) Kronecker states, or the ranks/options are invalid.
    """
    _, old = _layout(params, old_factor_ranks, options)
    paths, new = _layout(params, new_factor_ranks, options)
    state = kronecker_state(opt_state)
    per_leaf = _per_leaf(state.factors, old)
    default = options.get("rank", inspect.signature(_sketchy).parameters["rank"].default)
    factors = {}
    for key, members in new.groups.items():
        ranks, axes = new.ranks.get(key), []
        for axis, d in enumerate(new.plans[members[0]].block_shape):
            k2 = min(default, d) if ranks is None else ranks[axis]
            parts = [_resized(per_leaf[i][axis], k2, f"{paths[i]} axis {axis}") for i in members]
            # Members in the new layout's order: the blocks as gather_blocks will stack them.
            axes.append(jax.tree.map(lambda *p: jnp.concatenate(p), *parts))
        factors[key] = tuple(axes)
    new_state = state._replace(factors=factors)
    is_node = lambda x: isinstance(x, KroneckerState)  # noqa: E731
    return jax.tree.map(lambda x: new_state if is_node(x) else x, opt_state, is_leaf=is_node)
