"""Sketched second-order OCO methods: S-AdaGrad (ours) and the FD baselines of Appendix A.

All four keep a frequent-directions sketch ``Gbar_t = U diag(lam) U^T`` (``rank`` = ``k``
retained directions, the paper's sketch size ``l`` minus one, see
:mod:`sketchy.frequent_directions`) of the (possibly rescaled) gradient outer products, with
plain FD (``decay = 1``) and its cumulative escaped mass ``rho_{1:t}`` (the sketch's
``tail``). They differ in what they add to the sketch and how they invert it:

================  =============================  ==========================================
algorithm         sketched rows                  ``A_t`` (step ``x - eta_t A_t^+ g_t``)
================  =============================  ==========================================
S-AdaGrad         ``g_t``                        ``(Gbar_t + (delta + rho_{1:t}) I)^{1/2}``
Ada-FD            ``g_t``                        ``delta I + Gbar_t^{1/2}``
FD-SON            ``g_t / sqrt(eta sqrt(t))``    ``delta I + Gbar_t`` (``eta_t = 1``)
RFD-SON           ``g_t / sqrt(eta t)``          ``(delta + rho_{1:t} / 2) I + Gbar_t``
================  =============================  ==========================================

The FD-SON / RFD-SON row scalings fold the Online-Newton curvature weights into ``eta``
exactly as the code behind the paper's Appendix A experiments does (google-research's
``precondition`` repository, ``oco/``), so that
``eta`` acts as a learning rate (larger ``eta``, longer steps) for every method.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sketchy.frequent_directions import FDMethod, FDState, fd_init, fd_update
from sketchy.oco.metric import Metric, drop_rounding, pinv_apply
from sketchy.oco.transform import check_radius, check_range, check_rank, oco_transformation


class SketchedOCOState(NamedTuple):
    """State of the sketched OCO methods.

    Attributes:
      count: ``[]`` int32, steps taken ``t``.
      sketch: the FD sketch (``eigvecs [d, k]``, ``eigvals [k]``, ``tail = rho_{1:t}``).
    """

    count: jax.Array
    sketch: FDState


def _sketched(name, learning_rate, rank, delta, radius, fd_method, row_scale, metric_of, lr_step):
    """Shared FD loop: ``t += 1``; sketch ``row_scale(t) g``; step ``lr_step * A^+ g``."""
    check_range(name, "learning_rate", learning_rate, low=0.0, low_open=True)
    check_rank(name, rank)
    check_radius(name, radius)
    if fd_method not in ("svd", "eigh"):
        raise ValueError(f"{name}: fd_method must be 'svd' or 'eigh', got {fd_method!r}")

    def init_vector(d, dtype):
        return SketchedOCOState(count=jnp.zeros((), jnp.int32), sketch=fd_init(d, rank, dtype))

    def step(g, state):
        dtype = state.sketch.eigvals.dtype
        g = g.astype(dtype)
        count = state.count + 1
        t = count.astype(dtype)
        row = g * row_scale(t) if row_scale is not None else g
        sketch, _ = fd_update(state.sketch, row[:, None], decay=1.0, method=fd_method)
        metric = metric_of(sketch, jnp.asarray(delta, dtype), g.shape[0])
        s = jnp.asarray(lr_step, dtype) * pinv_apply(metric, g)
        return s, metric, SketchedOCOState(count=count, sketch=sketch)

    return oco_transformation(name, init_vector, step, radius)


def s_adagrad(
    learning_rate: float | jax.Array,
    rank: int,
    *,
    delta: float | jax.Array = 0.0,
    radius: float | None = None,
    fd_method: FDMethod = "svd",
) -> optax.GradientTransformation:
    """S-AdaGrad, paper Alg. 2 (Feinberg et al., arXiv 2302.03764, Sec. 3.2).

    With ``(rho_t, Gbar_t) = FD-update(Gbar_{t-1}, g_t g_t^T)`` and the dynamic diagonal
    ``rho_{1:t} = sum_{s<=t} rho_s`` (the escaped mass):

        G~_t = Gbar_t + (delta + rho_{1:t}) I
        y_{t+1} = x_t - eta G~_t^{-1/2} g_t
        x_{t+1} = argmin_{||x|| <= radius} ||y_{t+1} - x||_{G~_t^{1/2}}   (or y_{t+1})

    where ``G~^{-1/2}`` is the Moore-Penrose pseudo-inverse of ``G~^{1/2}`` (zero on
    directions no gradient has reached while ``rho_{1:t} = delta = 0``). The current gradient
    is in the preconditioner of its own step (AdaGrad convention). In ``span(U)`` the
    eigenvalues are ``lam_i + rho_{1:t} + delta``, on its complement ``rho_{1:t} + delta``.
    With ``rank >= d`` nothing escapes and this is full-matrix AdaGrad.

    Args:
      learning_rate: ``eta > 0`` (the paper's ``D / sqrt(2)`` in Thm. 3).
      rank: ``k >= 1`` retained sketch directions (the paper's ``l - 1``); memory ``O(d k)``.
      delta: initial diagonal ``>= 0`` (0 in the paper and in Appendix A).
      radius: ``None`` (unconstrained) or the radius ``> 0`` of the feasible ball ``K``.
      fd_method: ``"svd"`` or ``"eigh"``, see :func:`sketchy.frequent_directions.fd_update`.
    """
    check_range("s_adagrad", "delta", delta, low=0.0)

    def metric_of(sketch, delta, d):
        top = sketch.eigvals[0] + sketch.tail + delta
        inside = drop_rounding(sketch.eigvals + sketch.tail + delta, top, d)
        outside = drop_rounding(sketch.tail + delta, top, d)
        return Metric(sketch.eigvecs, jnp.sqrt(inside), jnp.sqrt(outside))

    return _sketched(
        "s_adagrad", learning_rate, rank, delta, radius, fd_method, None, metric_of, learning_rate
    )


def ada_fd(
    learning_rate: float | jax.Array,
    rank: int,
    *,
    delta: float | jax.Array,
    radius: float | None = None,
    fd_method: FDMethod = "svd",
) -> optax.GradientTransformation:
    """Ada-FD (Wan & Zhang, IJCAI 2018): FD-sketched AdaGrad with a *fixed* diagonal.

    With ``Gbar_t`` the FD sketch of ``sum_s g_s g_s^T`` (escaped mass discarded):

        H_t = delta I + Gbar_t^{1/2}
        x_{t+1} = Pi_K^{H_t}(x_t - eta H_t^{-1} g_t)

    ``delta`` is added to the *square-rooted* sketch eigenvalues. Paper Observation 2: with
    sketch size ``l <= r`` on ``r`` orthonormal gradient directions the regret of this
    fixed-``delta`` scheme is ``Omega(T^{3/4})``, which S-AdaGrad's dynamic diagonal avoids.

    Args:
      learning_rate: ``eta > 0``.
      rank: ``k >= 1`` retained sketch directions (the paper's ``l - 1``).
      delta: fixed diagonal ``> 0``.
      radius: ``None`` or the radius ``> 0`` of the feasible ball.
      fd_method: ``"svd"`` or ``"eigh"``.
    """
    check_range("ada_fd", "delta", delta, low=0.0, low_open=True)

    def metric_of(sketch, delta, d):
        del d
        return Metric(sketch.eigvecs, delta + jnp.sqrt(sketch.eigvals), delta)

    return _sketched(
        "ada_fd", learning_rate, rank, delta, radius, fd_method, None, metric_of, learning_rate
    )


def fd_son(
    learning_rate: float | jax.Array,
    rank: int,
    *,
    delta: float | jax.Array,
    radius: float | None = None,
    fd_method: FDMethod = "svd",
) -> optax.GradientTransformation:
    """FD-SON: Online Newton Step with an FD sketch (Luo et al., NeurIPS 2016, Alg. 1 + 3).

    With ``Gbar_t`` the FD sketch of ``sum_s eta_s^{ONS} g_s g_s^T``, ``eta_s^{ONS} =
    1 / (eta sqrt(s))`` (no exp-concavity term), and a fixed ridge ``delta``:

        A_t = delta I + Gbar_t
        x_{t+1} = Pi_K^{A_t}(x_t - A_t^{-1} g_t)

    Args:
      learning_rate: ``eta > 0``; scales the curvature down, i.e. the steps up.
      rank: ``k >= 1`` retained sketch directions (the paper's ``l - 1``).
      delta: ridge ``alpha > 0`` of the ONS matrix.
      radius: ``None`` or the radius ``> 0`` of the feasible ball.
      fd_method: ``"svd"`` or ``"eigh"``.
    """
    check_range("fd_son", "delta", delta, low=0.0, low_open=True)

    def metric_of(sketch, delta, d):
        del d
        return Metric(sketch.eigvecs, delta + sketch.eigvals, delta)

    def row_scale(t):
        return jax.lax.rsqrt(learning_rate * jnp.sqrt(t))

    return _sketched(
        "fd_son", learning_rate, rank, delta, radius, fd_method, row_scale, metric_of, 1
    )


def rfd_son(
    learning_rate: float | jax.Array,
    rank: int,
    *,
    delta: float | jax.Array = 0.0,
    radius: float | None = None,
    fd_method: FDMethod = "svd",
) -> optax.GradientTransformation:
    """RFD-SON: Online Newton Step with Robust FD (Luo, Chen, Zhang & Zhang, JMLR 2019).

    Robust FD keeps half the escaped mass as a growing ridge. With ``Gbar_t`` the FD sketch of
    ``sum_s g_s g_s^T / (eta s)`` and ``rho_{1:t}`` its escaped mass:

        alpha_t = delta + rho_{1:t} / 2
        A_t = alpha_t I + Gbar_t
        x_{t+1} = Pi_K^{A_t}(x_t - A_t^+ g_t)

    ``delta = 0`` is RFD0 (the Appendix A setting); ``A_t^+`` is the pseudo-inverse while
    ``alpha_t = 0``.

    Args:
      learning_rate: ``eta > 0``; scales the curvature down, i.e. the steps up.
      rank: ``k >= 1`` retained sketch directions (the paper's ``l - 1``).
      delta: initial ridge ``alpha_0 >= 0``.
      radius: ``None`` or the radius ``> 0`` of the feasible ball.
      fd_method: ``"svd"`` or ``"eigh"``.
    """
    check_range("rfd_son", "delta", delta, low=0.0)

    def metric_of(sketch, delta, d):
        alpha = delta + 0.5 * sketch.tail
        top = sketch.eigvals[0] + alpha
        inside = drop_rounding(sketch.eigvals + alpha, top, d)
        return Metric(sketch.eigvecs, inside, drop_rounding(alpha, top, d))

    def row_scale(t):
        return jax.lax.rsqrt(learning_rate * t)

    return _sketched(
        "rfd_son", learning_rate, rank, delta, radius, fd_method, row_scale, metric_of, 1
    )
