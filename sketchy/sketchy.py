"""Sketchy, i.e. S-Shampoo (paper Alg. 3 with the EMA of Sec. 4.3): Shampoo whose Kronecker
factors are frequent-directions sketches of rank ``k`` instead of dense ``d x d`` matrices.

Per block and axis ``i`` (order-``p`` block ``G``, matricization ``G_(i)``), every
``update_freq`` steps on that step's gradient only (the paper's protocol)::

    (Lbar_i, rho) = FD-update(b2 * Lbar_i, G_(i) G_(i)^T)      # rank-k sketch, U diag(lam) U^T
    tau_i <- b2 tau_i + rho                                   # escaped mass ("tail")

and every step the factor's inverse root is applied in O(d k) per column::

    P_i y = U diag((lam + tau + eps')^(-1/(2p))) U^T y + (tau + eps')^(-1/(2p)) (I - U U^T) y

then the direction is grafted like Shampoo's. State per factor is ``d k + k + 1`` floats
(``U``, ``lam``, ``tau``) against Shampoo's ``2 d^2``: for ``d = 1024, k = 256`` the
statistics shrink 4x and statistics + inverse roots 8x. An axis with ``d <= rank`` is kept
exactly.

Relation to Shampoo. Sketchy's sketch sees only every ``update_freq``-th gradient (the
paper's protocol, and both reference implementations'), while :func:`sketchy.shampoo`'s
statistics see every gradient by default. So with ``rank >= d`` Sketchy reduces to Shampoo
only for ``update_freq = 1``, or for any ``update_freq`` against Shampoo with
``statistics_freq=update_freq`` (the subsampling control: it separates the cost of sketching
from the cost of observing fewer gradients). Then the sketch sums ``b2 S + G G^T`` where
Shampoo's EMA is ``b2 L + (1 - b2) G G^T``, so ``S = L / (1 - b2)`` and before grafting
Sketchy's direction is ``sqrt(1 - b2)`` times Shampoo's (exponents ``1/(2p)`` over ``p``
axes); after grafting they are equal.

Compared with ``distributed_shampoo``'s frequent-directions mode (the paper's code): the
same update at ``eps = 0`` (parity tested to 1e-5, measured 5e-7). That mode adds the
ridge ``eps lambda_1`` into the sketch at every FD step, leaves an axis unpreconditioned
until its sketch holds ``k`` directions and a tail, keeps ``d x d`` statistics, and (0.3.0)
drops the sketch eigenvalues of every factor smaller than the model's largest one at each
FD step (they are packed into rows that are then cut off).

Reference: Feinberg et al., "Sketchy: Memory-efficient Adaptive Regularization with
Frequent Directions", NeurIPS 2023 (arXiv 2302.03764).
"""

from collections.abc import Mapping, Sequence
from typing import Literal

import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from sketchy.frequent_directions import (
    FDMethod,
    fd_init,
    fd_inverse_root_apply,
    fd_update,
)
from sketchy.grafting import as_graft
from sketchy.kronecker import (
    KroneckerRule,
    per_axis_update,
    scale_by_kronecker,
    validate_b2,
    validate_update_freq,
)
from sketchy.optimizer_chain import with_momentum_and_lr

TailDecay = Literal["b2", "sqrt_b2"]


def sketchy_rule(
    *,
    rank: int,
    b2: float,
    eps: float,
    relative_eps: bool,
    update_freq: int,
    tail_decay: TailDecay,
    fd_method: FDMethod,
    fd_chunk: int | None = None,
) -> KroneckerRule:
    tail_factor = b2 if tail_decay == "b2" else b2**0.5

    def update_factor(f, x):
        new, rho = fd_update(
            f, x, decay=b2, tail_decay=tail_factor, method=fd_method, chunk=fd_chunk
        )
        return new, jnp.isnan(rho)

    def apply_factor(f, y, exponent):
        return fd_inverse_root_apply(f, y, exponent, eps, relative_eps)

    return KroneckerRule(
        # rank k: a parameter's own rank (factor_ranks), else the default; fd_init caps at d.
        init_factor=lambda d, k=rank: fd_init(d, k, jnp.float32),
        update_block=per_axis_update(update_factor),
        # The inverse root is O(k) from (lam, tau): computed when applied, never stored.
        refresh_factor=None,
        apply_factor=apply_factor,
        stats_every=update_freq,
        refresh_every=update_freq,
        statistics_decompose=True,
        rank=rank,
    )


def scale_by_sketchy(
    *,
    rank: int = 256,
    block_size: int = 1024,
    b2: float = 0.999,
    eps: float = 1e-6,
    relative_eps: bool = True,
    update_freq: int = 10,
    start_preconditioning_step: int = 10,
    graft: str | optax.GradientTransformation | None = "rmsprop",
    graft_eps: float = 1e-8,
    max_precond_dim: int = 4096,
    exponent_override: float | None = None,
    tail_decay: TailDecay = "b2",
    fd_method: FDMethod = "eigh",
    max_merged_dim: int | None = None,
    precondition_1d: bool = False,
    block_sharding: NamedSharding | None = None,
    fd_chunk: int | None = None,
    factor_ranks: Mapping[str, int | Sequence[int]] | None = None,
) -> optax.GradientTransformation:
    """Sketchy's (S-Shampoo's) preconditioned, grafted direction (no momentum, no lr).

    Per block ``G`` of order ``p`` and each axis ``i`` (``G_(i)``: the ``d x n``
    matricization), with ``c`` the step count::

        if c % update_freq == 0:   (U_i, lam_i), rho = FD_k(b2 U_i diag(lam_i) U_i^T
                                                        + G_(i) G_(i)^T)
                                   tau_i <- b2 tau_i + rho
        P_i = U_i diag((lam_i + tau_i + eps')^(-1/(2p))) U_i^T
              + (tau_i + eps')^(-1/(2p)) (I - U_i U_i^T)
        D = G x_1 P_1 ... x_p P_p,      update = D ||graft(G)|| / ||D||

    ``FD_k`` keeps the top ``k = rank`` eigenpairs and returns the ``(k+1)``-th eigenvalue
    ``rho`` subtracted from them (the escaped mass); ``eps' = eps lambda_max`` if
    ``relative_eps``. Before ``start_preconditioning_step`` the update is ``graft(G)``.

    Args:
      rank: directions ``k`` kept per factor (the paper's ``l - 1``; paper runs: 256).
      block_size, b2, eps, relative_eps, start_preconditioning_step, graft, graft_eps,
        max_precond_dim, exponent_override, max_merged_dim, precondition_1d, block_sharding: as in
        :func:`sketchy.scale_by_shampoo`; ``b2`` decays the sketch and the tail per FD step.
      update_freq: the FD step runs every this many steps, on that step's gradient.
      tail_decay: ``"b2"`` (paper, Obs. 6) or ``"sqrt_b2"`` (one reference implementation
        decays the escaped mass by ``sqrt(b2)`` while the sketch decays by ``b2``).
      fd_method: ``"eigh"`` (default: ``eigh`` of the smaller Gram matrix finds the top
        subspace, a thin SVD of the gradient-and-sketch matrix projected onto it gives the
        singular values) or ``"svd"`` (QR + thin SVD of the whole matrix, never forms
        ``d x d``). Both are exact to float32 rounding, escaped mass included (an exactly
        low-rank stream leaves a tail at the ``u^2 lambda_max`` level either way); ``eigh``
        is the default because its refresh is 2-3x faster on CPU for blocks of 256-1024.
        See :func:`sketchy.frequent_directions.fd_update`.
      fd_chunk: feed each gradient's columns to the sketch in chunks of this many (about
        ``rank``), one FD step per chunk with the decay applied once (Liberty 2013): a
        refresh in O(d n k) instead of O(d^2 (k + n)), with FD's guarantees (sandwich,
        tail bound) but not the one-shot sketch. ``None`` (default): one FD step.
      factor_ranks: per-parameter ranks, ``{path: r or (r_0, ..., r_{p-1})}`` with ``path``
        as ``jax.tree_util.keystr`` spells it for the params pytree (``"['conv1']['kernel']"``)
        and one rank for every axis or one per axis of the parameter's *merged block shape*
        (``sketchy.blocking.plan_blocks(shape, block_size, max_precond_dim,
        max_merged_dim, precondition_1d).block_shape``: at the defaults a ``3x3x64x128`` kernel
        merges to ``576x128``, two axes); each capped at its axis like ``rank``. Parameters not
        named use ``rank``. Unknown paths, graft-only parameters or a wrong number of axes
        raise a ``ValueError`` at ``init``. State per factor: ``d r + r + 1`` floats. To
        change ranks mid-run (``rank: auto``) see :func:`sketchy.rank_resize.resize_state`.
    """
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    validate_b2(b2)
    validate_update_freq(update_freq)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    if tail_decay not in ("b2", "sqrt_b2"):
        raise ValueError(f"tail_decay must be 'b2' or 'sqrt_b2', got {tail_decay!r}")
    if fd_method not in ("svd", "eigh"):
        raise ValueError(f"fd_method must be 'svd' or 'eigh', got {fd_method!r}")
    if fd_chunk is not None and (not isinstance(fd_chunk, int) or fd_chunk < 1):
        raise ValueError(f"fd_chunk must be None or an integer >= 1, got {fd_chunk!r}")
    rule = sketchy_rule(
        rank=rank,
        b2=b2,
        eps=eps,
        relative_eps=relative_eps,
        update_freq=update_freq,
        tail_decay=tail_decay,
        fd_method=fd_method,
        fd_chunk=fd_chunk,
    )
    return scale_by_kronecker(
        rule,
        graft=as_graft(graft, b2, graft_eps),
        block_size=block_size,
        max_precond_dim=max_precond_dim,
        start_preconditioning_step=start_preconditioning_step,
        exponent_override=exponent_override,
        max_merged_dim=max_merged_dim,
        precondition_1d=precondition_1d,
        block_sharding=block_sharding,
        factor_ranks=factor_ranks,
    )


def sketchy(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    weight_decay_mask=None,
    rank: int = 256,
    block_size: int = 1024,
    b2: float = 0.999,
    eps: float = 1e-6,
    relative_eps: bool = True,
    update_freq: int = 10,
    start_preconditioning_step: int = 10,
    graft: str | optax.GradientTransformation | None = "rmsprop",
    graft_eps: float = 1e-8,
    max_precond_dim: int = 4096,
    exponent_override: float | None = None,
    tail_decay: TailDecay = "b2",
    fd_method: FDMethod = "eigh",
    max_merged_dim: int | None = None,
    precondition_1d: bool = False,
    block_sharding: NamedSharding | None = None,
    fd_chunk: int | None = None,
    factor_ranks: Mapping[str, int | Sequence[int]] | None = None,
) -> optax.GradientTransformation:
    """Sketchy (S-Shampoo): :func:`scale_by_sketchy` + momentum, weight decay, -lr.

    With ``D_t`` the grafted Sketchy direction of :func:`scale_by_sketchy` (FD-sketched
    Kronecker factors ``P_i``, ``D = G x_1 P_1 ... x_p P_p`` rescaled to ``||graft(G)||``)::

        m_t = b1 m_{t-1} + D_t
        x_{t+1} = x_t - lr_t (D_t + b1 m_t + wd x_t)     (nesterov; else m_t + wd x_t)

    A step with a non-finite gradient changes nothing (parameters, statistics, momentum).
    See :func:`scale_by_sketchy` for the preconditioner's arguments and
    :func:`sketchy.optimizer_chain.with_momentum_and_lr` for the rest.
    """
    direction = scale_by_sketchy(
        rank=rank,
        block_size=block_size,
        b2=b2,
        eps=eps,
        relative_eps=relative_eps,
        update_freq=update_freq,
        start_preconditioning_step=start_preconditioning_step,
        graft=graft,
        graft_eps=graft_eps,
        max_precond_dim=max_precond_dim,
        exponent_override=exponent_override,
        tail_decay=tail_decay,
        fd_method=fd_method,
        max_merged_dim=max_merged_dim,
        precondition_1d=precondition_1d,
        block_sharding=block_sharding,
        fd_chunk=fd_chunk,
        factor_ranks=factor_ranks,
    )
    return with_momentum_and_lr(
        direction,
        learning_rate,
        b1=b1,
        nesterov=nesterov,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
    )
