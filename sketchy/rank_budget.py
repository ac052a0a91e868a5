"""Per-factor sketch ranks under a memory budget (issue 16, ``rank: auto``): the two pieces.

1. :func:`fd_truncate` shrinks a Frequent-Directions sketch from ``k1`` to ``k2`` retained
   directions the way an FD step deflates, so that FD's sandwich ``Gbar <= G <= Gbar + tail I``
   survives the cut and later :func:`~sketchy.frequent_directions.fd_update` steps at rank
   ``k2`` keep it.
2. :func:`allocate_ranks` picks an integer rank per factor that maximises the captured
   spectral mass (each block's share of its own trace, so layers whose gradient scales differ
   by orders of magnitude compete fairly) within a budget of words, by a greedy on marginal
   gain per word.

How a caller (the trainer, later) is meant to use them, after a warm-up at a generous rank
``k_warm``::

    spectra = {key: factor_spectrum(state_of(key)) for key in factor_keys}
    budget = budget_of_uniform_rank(spectra, 16)  # "the memory of uniform rank 16"
    ranks = allocate_ranks(spectra, budget)
    new = {key: fd_truncate(state_of(key), ranks[key]) for key in factor_keys}

A *factor* is one sketched axis of one parameter (``key``, e.g. ``(param_path, axis)``)
together with all the blocks that share its rank: Sketchy stacks a parameter's blocks, so one
factor is one ``FDState`` with leading dims ``[nblocks]`` and a single ``k``. Pure host-side
numpy except :func:`fd_truncate`, which is jax and jit-able (``k2`` static).
"""

import heapq
from collections.abc import Hashable, Mapping
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from sketchy.frequent_directions import FDState


def fd_truncate(state: FDState, k2: int) -> FDState:
    """Shrink an FD sketch to its top ``k2`` directions, moving the cut into the tail.

    With ``Gbar_1 = sum_{i <= k1} l_i u_i u_i^T`` (``l`` descending, ``>= 0``) and
    ``rho = l_{k2+1}``, the result keeps ``u_1..u_k2`` with eigenvalues ``l_i - rho`` and
    ``tail_2 = tail_1 + rho`` (no decay: truncation is not a time step). This is one FD step
    at rank ``k2`` that adds no new columns.

    Why the sandwich survives: ``Gbar_1 - Gbar_2 = rho P + sum_{i > k2} l_i u_i u_i^T`` with
    ``P`` the projector on ``u_1..u_k2``. That is PSD, so ``Gbar_2 <= Gbar_1 <= G``; and its
    eigenvalues are ``rho`` (on the kept span), ``l_i <= rho`` (dropped directions, since
    ``l`` is descending) and 0, so ``Gbar_1 <= Gbar_2 + rho I`` and
    ``G <= Gbar_1 + tail_1 I <= Gbar_2 + (tail_1 + rho) I``. Seen from the preconditioner's
    upper bound ``Gbar + tail I``: on the kept span it is unchanged (``l_i + tail_1``), and each
    dropped eigenvalue ``l_i + tail_1`` (and ``tail_1`` off the sketch) is raised to
    ``rho + tail_1``, the least isotropic raise that stays above ``Gbar_1 + tail_1 I``. Not
    deflating the kept eigenvalues would also be a valid sandwich but counts ``rho`` twice on
    the kept span. Since ``Gbar_1 <= G``, Weyl gives ``rho <= lambda_{k2+1}(G)``: the cut costs
    at most the true ``(k2+1)``-th eigenvalue, and nothing on a stream of rank ``<= k2``.

    Edge cases: the columns are sorted by eigenvalue first (FD keeps them descending; a
    hand-built or padded state need not be), negative rounding is clamped to 0, and a kept
    column whose deflated eigenvalue is 0 gets a zero eigenvector, as in ``fd_update``. A zero
    ``(k2+1)``-th eigenvalue (e.g. an all-zero or low-rank block) moves nothing. Leading batch
    dims (stacked blocks ``[..., d, k1]``) are truncated independently.

    Args:
      state: sketch with ``eigvecs [..., d, k1]``, ``eigvals [..., k1]``, ``tail [...]``.
      k2: new number of retained directions, ``1 <= k2 <= k1`` (a Python int).

    Returns:
      The rank-``k2`` state; ``state`` itself when ``k2 == k1`` (a no-op, so a factor whose
      allocated rank equals its warm-up rank needs no special case).

    Raises:
      ValueError: if ``k2 < 1`` or ``k2 > k1`` (a sketch cannot be grown by truncation).
    """
    k1 = state.eigvecs.shape[-1]
    if not isinstance(k2, int | np.integer) or not 1 <= k2 <= k1:
        raise ValueError(f"fd_truncate: k2 must be an integer in [1, k1={k1}], got {k2!r}")
    if k2 == k1:
        return state
    lam = jnp.maximum(state.eigvals, 0.0)
    order = jnp.argsort(-lam, axis=-1)  # stable: ties keep FD's column order
    lam = jnp.take_along_axis(lam, order, axis=-1)
    vecs = jnp.take_along_axis(state.eigvecs, order[..., None, :], axis=-1)
    rho = lam[..., k2]
    kept = jnp.maximum(lam[..., :k2] - rho[..., None], 0.0)
    return FDState(
        eigvecs=vecs[..., :k2] * (kept > 0)[..., None, :].astype(vecs.dtype),
        eigvals=kept.astype(state.eigvals.dtype),
        tail=(state.tail + rho).astype(state.tail.dtype),
    )


class FactorSpectrum(NamedTuple):
    """What :func:`allocate_ranks` needs to know about one factor.

    Attributes:
      d: the factor's dimension (block size along the sketched axis).
      nblocks: number of blocks sharing the factor's rank (each costs its own sketch).
      eigvals: warm-up sketch eigenvalues, descending: ``[k_warm]`` (one spectrum taken as
        representative of every block, e.g. a single-block factor) or ``[nblocks, k_warm]``
        (one per block: preferred, see :func:`allocate_ranks`).
      tail: warm-up tail, ``[]`` or ``[nblocks]`` to match ``eigvals``.
    """

    d: int
    nblocks: int
    eigvals: np.ndarray
    tail: np.ndarray


def factor_spectrum(state: FDState) -> FactorSpectrum:
    """The :class:`FactorSpectrum` of a (possibly stacked ``[..., d, k]``) sketch state."""
    d, k = state.eigvecs.shape[-2:]
    lam = np.asarray(state.eigvals, np.float64).reshape(-1, k)
    tail = np.asarray(state.tail, np.float64).reshape(-1)
    return FactorSpectrum(d=int(d), nblocks=lam.shape[0], eigvals=lam, tail=tail)


def rank_cost(spec: FactorSpectrum, rank: int) -> int:
    """Words of a factor at ``rank``: ``nblocks (d r + r + 1)`` (as ``memory.sketchy_floats``)."""
    r = min(rank, spec.d)
    return spec.nblocks * (spec.d * r + r + 1)


def budget_of_uniform_rank(factors: Mapping[Hashable, FactorSpectrum], rank: int) -> int:
    """Words that uniform ``rank`` (``min(rank, d)`` per factor, like ``fd_init``) costs."""
    return sum(rank_cost(spec, rank) for spec in factors.values())


def marginal_gains(spec: FactorSpectrum) -> np.ndarray:
    """``[k_warm]``: gain of the factor's ``j``-th direction, summed over its blocks.

    Per block, ``lam_j / (sum_i lam_i + d tail)``: the ``j``-th eigenvalue's share of the
    trace of the block's upper bound ``Gbar + tail I``. Scale-free, so the shares of a layer
    with gradients ``1e3`` times larger are comparable to a small layer's; a block with no
    mass (e.g. sharding padding) gains 0. A ``[k_warm]`` spectrum counts for every block.
    FD's eigenvalues are deflated (the floor ``tail`` is not in ``lam``), so a direction
    that sits at the floor gains nothing: the tail already stands in for it.
    """
    lam = np.maximum(np.asarray(spec.eigvals, np.float64), 0.0)
    tail = np.maximum(np.asarray(spec.tail, np.float64), 0.0)
    lam2 = lam.reshape(-1, lam.shape[-1])
    trace = lam2.sum(axis=-1) + spec.d * tail.reshape(-1)
    if lam2.shape[0] not in (1, spec.nblocks) or trace.shape[0] != lam2.shape[0]:
        raise ValueError(
            f"marginal_gains: eigvals {lam.shape} / tail {tail.shape} do not match "
            f"nblocks={spec.nblocks}"
        )
    share = lam2 / np.where(trace > 0, trace, 1.0)[:, None]
    share = share.sum(axis=0) * (spec.nblocks if lam2.shape[0] == 1 else 1)
    # Sort: a hand-built spectrum need not be descending, and the greedy needs concavity.
    return np.sort(share)[::-1]


def captured_mass(factors: Mapping[Hashable, FactorSpectrum], ranks: Mapping) -> float:
    """The objective: ``sum_f sum_{j <= r_f} gains_f[j]`` (blocks' trace shares, summed)."""
    return float(sum(marginal_gains(s)[: ranks[key]].sum() for key, s in factors.items()))


def _rank_bounds(spec: FactorSpectrum, min_rank: int, max_rank: int | None) -> tuple[int, int]:
    k_warm = np.shape(spec.eigvals)[-1]
    cap = min(spec.d, k_warm, max_rank if max_rank is not None else k_warm)
    # A factor cannot hold more directions than its dimension or warm sketch: min_rank is
    # clamped to that cap rather than made an error (a d=2 factor and min_rank=4).
    return min(min_rank, cap), cap


def allocate_ranks(
    factors: Mapping[Hashable, FactorSpectrum],
    budget: int,
    *,
    min_rank: int = 1,
    max_rank: int | None = None,
) -> dict:
    """Integer ranks maximising the captured spectral mass within ``budget`` words.

    Problem: maximise ``sum_f sum_{j <= r_f} g_f[j]`` subject to
    ``sum_f nblocks_f (d_f r_f + r_f + 1) <= budget`` and
    ``min(min_rank, c_f) <= r_f <= c_f = min(d_f, k_warm_f, max_rank)``. The gain ``g_f[j]``
    (:func:`marginal_gains`) is the ``j``-th warm-up eigenvalue's share of its block's trace
    ``sum lam + d tail``, summed over the factor's blocks: shares, not raw eigenvalues,
    because raw mass would hand every rank to the layer with the largest gradients. Each block
    is one unit of mass, so per-block spectra (``[nblocks, k_warm]``) are preferred to one
    aggregate: a factor whose blocks differ gets the rank that serves them on average.

    Method: every factor starts at its minimum rank; then the next direction with the largest
    gain per word ``g_f[r_f + 1] / (nblocks_f (d_f + 1))`` is added while it fits, and a
    factor whose next direction does not fit is closed (others may still fit). Ties go to the
    lower rank, then to the earlier key, so identical factors grow round-robin. Directions
    with zero gain (past a low-rank stream's rank) are never bought: the unspent words are
    left unused rather than spent on nothing.

    Optimality: ``g_f`` is descending and a factor's per-direction cost is constant, so each
    factor's gain is concave in its rank and this greedy solves the fractional knapsack
    exactly. For the integer problem, with ``A`` the greedy's mass and ``OPT`` the optimum,
    ``A <= OPT <= A + max_f g_f[r_f + 1]`` (the fractional optimum adds at most a fraction of
    the first direction that did not fit, whose factor was closed at ``r_f``). When every
    factor's direction costs the same, greedy is exactly optimal (the best ``m`` directions).

    Args:
      factors: ``key -> FactorSpectrum`` (e.g. from :func:`factor_spectrum`).
      budget: words (float32 elements) for all the factors' sketches together.
      min_rank, max_rank: bounds on every factor's rank (``max_rank`` None: no extra cap).

    Returns:
      ``{key: rank}`` (Python ints), in ``factors``' order.

    Raises:
      ValueError: if ``budget`` cannot pay ``min_rank`` everywhere (one line, naming the
        minimum budget), or the bounds are inconsistent.
    """
    if min_rank < 1 or (max_rank is not None and max_rank < min_rank):
        raise ValueError(f"allocate_ranks: need 1 <= min_rank <= max_rank: {min_rank}, {max_rank}")
    keys = list(factors)
    bounds = [_rank_bounds(factors[key], min_rank, max_rank) for key in keys]
    ranks = [lo for lo, _ in bounds]
    spent = sum(rank_cost(factors[key], r) for key, r in zip(keys, ranks, strict=True))
    if spent > budget:
        raise ValueError(
            f"allocate_ranks: budget {budget} words is below the {spent} words that "
            f"min_rank={min_rank} costs for all {len(keys)} factors"
        )
    gains = [marginal_gains(factors[key]) for key in keys]
    step_cost = [factors[key].nblocks * (factors[key].d + 1) for key in keys]
    heap = []

    def push(i):
        r = ranks[i]
        if r < bounds[i][1] and gains[i][r] > 0:  # gains[i][r] is direction r + 1
            heapq.heappush(heap, (-gains[i][r] / step_cost[i], r, i))

    for i in range(len(keys)):
        push(i)
    while heap:
        _, _, i = heapq.heappop(heap)
        if spent + step_cost[i] > budget:
            continue  # closed: later directions of i cost the same and gain less
        spent += step_cost[i]
        ranks[i] += 1
        push(i)
    return {key: int(r) for key, r in zip(keys, ranks, strict=True)}
