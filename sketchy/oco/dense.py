"""Unsketched OCO baselines: online gradient descent, diagonal and full-matrix AdaGrad.

Full-matrix AdaGrad (Duchi, Hazan & Singer, JMLR 2011) is the ``d^2``-memory method whose
regret S-AdaGrad matches (paper Thm. 3); the paper's reference code lacks it. It costs an
``eigh`` of a ``d x d`` matrix per step, so keep ``d`` in the hundreds.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sketchy.oco.metric import Metric, drop_rounding, pinv_apply
from sketchy.oco.transform import (
    check_radius,
    check_range,
    euclidean_metric,
    oco_transformation,
)


class OGDState(NamedTuple):
    """Attributes: count: ``[]`` int32 steps taken ``t``."""

    count: jax.Array


class DiagAdagradState(NamedTuple):
    """Attributes: sum_of_squares: ``[d]`` ``sum_s g_s^2`` (elementwise)."""

    sum_of_squares: jax.Array


class FullAdagradState(NamedTuple):
    """Attributes: statistics: ``[d, d]`` ``G_t = sum_s g_s g_s^T``."""

    statistics: jax.Array


def _common_checks(name, learning_rate, delta, radius):
    check_range(name, "learning_rate", learning_rate, low=0.0, low_open=True)
    check_range(name, "delta", delta, low=0.0)
    check_radius(name, radius)


def ogd(
    learning_rate: float | jax.Array,
    *,
    delta: float | jax.Array = 0.0,
    radius: float | None = None,
) -> optax.GradientTransformation:
    """Online gradient descent with a ``1 / sqrt(t)`` step (Zinkevich, ICML 2003).

        x_{t+1} = Pi_K(x_t - eta g_t / sqrt(t + delta))      (Euclidean projection)

    Args:
      learning_rate: ``eta > 0``.
      delta: offset ``>= 0`` of the step count (0 in Appendix A).
      radius: ``None`` or the radius ``> 0`` of the feasible ball.
    """
    _common_checks("ogd", learning_rate, delta, radius)

    def init_vector(d, dtype):
        del d, dtype
        return OGDState(count=jnp.zeros((), jnp.int32))

    def step(g, state):
        count = state.count + 1
        scale = learning_rate * jax.lax.rsqrt(count.astype(g.dtype) + delta)
        return scale * g, euclidean_metric(g.shape[0], g.dtype), OGDState(count)

    return oco_transformation("ogd", init_vector, step, radius)


def diag_adagrad(
    learning_rate: float | jax.Array,
    *,
    delta: float | jax.Array = 0.0,
    radius: float | None = None,
) -> optax.GradientTransformation:
    """Diagonal AdaGrad (Duchi, Hazan & Singer, JMLR 2011; McMahan & Streeter, COLT 2010).

        h_t = delta + sum_{s<=t} g_s^2          (elementwise)
        x_{t+1} = Pi_K^{diag(h_t)^{1/2}}(x_t - eta h_t^{-1/2} g_t)

    with ``h^{-1/2} = 0`` where ``h = 0`` (pseudo-inverse: coordinates no gradient has
    touched do not move).

    Args:
      learning_rate: ``eta > 0``.
      delta: initial diagonal ``>= 0`` (0 in Appendix A).
      radius: ``None`` or the radius ``> 0`` of the feasible ball.
    """
    _common_checks("diag_adagrad", learning_rate, delta, radius)

    def init_vector(d, dtype):
        return DiagAdagradState(sum_of_squares=jnp.zeros((d,), dtype))

    def step(g, state):
        g = g.astype(state.sum_of_squares.dtype)
        h = state.sum_of_squares + g * g
        metric = Metric(None, jnp.sqrt(h + delta), jnp.zeros((), g.dtype))
        return learning_rate * pinv_apply(metric, g), metric, DiagAdagradState(h)

    return oco_transformation("diag_adagrad", init_vector, step, radius)


def full_adagrad(
    learning_rate: float | jax.Array,
    *,
    delta: float | jax.Array = 0.0,
    radius: float | None = None,
) -> optax.GradientTransformation:
    """Full-matrix AdaGrad (Duchi, Hazan & Singer, JMLR 2011), the paper's ``d^2`` reference.

        G_t = sum_{s<=t} g_s g_s^T
        x_{t+1} = Pi_K^{(delta I + G_t)^{1/2}}(x_t - eta (delta I + G_t)^{-1/2} g_t)

    with the Moore-Penrose pseudo-inverse of the root (eigenvalues at rounding level of the
    largest count as zero). Memory ``O(d^2)``, one ``d x d`` ``eigh`` per step.

    Args:
      learning_rate: ``eta > 0``.
      delta: initial diagonal ``>= 0``.
      radius: ``None`` or the radius ``> 0`` of the feasible ball.
    """
    _common_checks("full_adagrad", learning_rate, delta, radius)

    def init_vector(d, dtype):
        return FullAdagradState(statistics=jnp.zeros((d, d), dtype))

    def step(g, state):
        g = g.astype(state.statistics.dtype)
        stats = state.statistics + jnp.outer(g, g)
        d = g.shape[0]
        w, v = jnp.linalg.eigh(stats + delta * jnp.eye(d, dtype=g.dtype))
        w = drop_rounding(jnp.maximum(w, 0.0), jnp.max(w), d)
        metric = Metric(v, jnp.sqrt(w), jnp.zeros((), g.dtype))
        return learning_rate * pinv_apply(metric, g), metric, FullAdagradState(stats)

    return oco_transformation("full_adagrad", init_vector, step, radius)
