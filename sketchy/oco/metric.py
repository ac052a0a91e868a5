"""The PSD matrix ``A_t`` behind every OCO preconditioner, in eigen form.

Every algorithm of :mod:`sketchy.oco` steps ``y = x - eta A_t^+ g`` and projects back
onto the feasible set in the norm ``||z||_{A_t} = sqrt(z^T A_t z)``. All their ``A_t`` are
"low rank plus a multiple of the identity" (the sketched methods), a full eigensystem
(full-matrix AdaGrad) or diagonal (AdaGrad, OGD), so one representation serves them all:

``A = U diag(a) U^T + c (I - U U^T)`` with ``U`` ``[d, m]`` orthonormal (zero columns allowed,
they belong to the complement), or ``A = diag(a)`` when ``U`` is ``None``.

Zero eigenvalues are handled as the Moore-Penrose pseudo-inverse does (the paper's Alg. 2
inverts ``G~^{1/2}`` that way): ``A^+`` is zero on the null space of ``A``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Metric(NamedTuple):
    """``A = U diag(a) U^T + c (I - U U^T)``, or ``diag(a)`` when ``eigvecs`` is ``None``.

    Attributes:
      eigvecs: ``[d, m]`` orthonormal (or zero) columns ``U``, or ``None`` for a diagonal ``A``.
      eigvals: ``[m]`` eigenvalues ``a >= 0`` on ``span(U)`` (``[d]``: the diagonal).
      complement: ``[]`` eigenvalue ``c >= 0`` on the orthogonal complement of ``span(U)``.
    """

    eigvecs: jax.Array | None
    eigvals: jax.Array
    complement: jax.Array


def drop_rounding(s: jax.Array, s_max: jax.Array, d: int) -> jax.Array:
    """Zero eigenvalues of a statistic that are at rounding level of its largest one.

    Applied to the *statistic* (e.g. ``sum g g^T``) before any root is taken: a rounding-level
    ``1e-16 lambda_max`` would otherwise become ``1e-8 sqrt(lambda_max)`` after the square root
    and its pseudo-inverse would blow rounding noise up by ``1e8``. The tolerance
    ``d * eps * s_max`` is numpy's default for ``pinv``/``matrix_rank``.
    """
    tol = d * jnp.finfo(s.dtype).eps * s_max
    return jnp.where(s > tol, s, jnp.zeros_like(s))


def _pinv(a: jax.Array) -> jax.Array:
    safe = jnp.where(a > 0, a, jnp.ones_like(a))
    return jnp.where(a > 0, 1.0 / safe, jnp.zeros_like(a))


def pinv_apply(metric: Metric, g: jax.Array) -> jax.Array:
    """``A^+ g`` for a vector ``g`` (``[d]``) in O(d m)."""
    if metric.eigvecs is None:
        return _pinv(metric.eigvals) * g
    u = metric.eigvecs
    coef = u.T @ g
    outside = g - u @ coef
    return u @ (_pinv(metric.eigvals) * coef) + _pinv(metric.complement) * outside


def _shrink(a: jax.Array, mu: jax.Array) -> jax.Array:
    """``a / (a + mu)``; 1 where ``a == 0`` (the seminorm does not charge those directions)."""
    return jnp.where(a > 0, a / jnp.where(a > 0, a + mu, 1.0), jnp.ones_like(a))


def project_ball(metric: Metric, y: jax.Array, radius: float | jax.Array, iters: int = 100):
    """``argmin_{||x||_2 <= radius} ||x - y||_A``: the projection step of paper Alg. 2.

    The KKT conditions give ``x(mu) = (A + mu I)^{-1} A y`` with the multiplier ``mu >= 0``
    the root of ``||x(mu)||_2 = radius`` (``||x(mu)||`` decreases in ``mu``); in the eigenbasis
    of ``A`` this is a scalar equation in O(m) work, solved by ``iters`` bisection steps on
    ``[0, a_max ||y|| / radius]``. Directions with ``a = 0`` are left as they are: ``A``
    puts no cost on them, and the pseudo-inverse step never moves them, so they are inherited
    from the previous (feasible) iterate. A final radial rescale guarantees feasibility.

    Args:
      metric: the matrix ``A`` (PSD).
      y: ``[d]`` the unprojected point.
      radius: of the Euclidean ball centred at the origin.
      iters: bisection steps (100 reach float64 resolution from any bracket).

    Returns:
      ``[d]`` the projected point (``y`` itself when already inside the ball).
    """
    if metric.eigvecs is None:
        coef, a = y, metric.eigvals
        rest_norm2, c = jnp.zeros((), y.dtype), jnp.zeros((), y.dtype)
    else:
        u = metric.eigvecs
        coef, a, c = u.T @ y, metric.eigvals, metric.complement
        rest = y - u @ coef
        rest_norm2 = jnp.sum(rest * rest)

    def norm2(mu):
        return jnp.sum((_shrink(a, mu) * coef) ** 2) + _shrink(c, mu) ** 2 * rest_norm2

    r2 = jnp.asarray(radius, y.dtype) ** 2
    y_norm = jnp.sqrt(jnp.sum(y * y))
    a_max = jnp.maximum(jnp.max(a, initial=0.0), c)
    hi0 = jnp.maximum(a_max * y_norm / jnp.sqrt(r2), jnp.finfo(y.dtype).tiny)

    def bisect(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        inside = norm2(mid) <= r2
        return jnp.where(inside, lo, mid), jnp.where(inside, mid, hi)

    _, mu = jax.lax.fori_loop(0, iters, bisect, (jnp.zeros_like(hi0), hi0))
    if metric.eigvecs is None:
        x = _shrink(a, mu) * y
    else:
        x = u @ (_shrink(a, mu) * coef) + _shrink(c, mu) * rest
    x_norm = jnp.sqrt(jnp.sum(x * x))
    x = x * jnp.minimum(1.0, jnp.sqrt(r2) / jnp.maximum(x_norm, jnp.finfo(y.dtype).tiny))
    return jnp.where(y_norm * y_norm <= r2, y, x)
