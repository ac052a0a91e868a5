"""Shared plumbing: flatten any pytree to one vector, step, optionally project, and check
hyperparameters.

The OCO algorithms precondition the whole parameter vector with one matrix (paper Sec. 3
works on ``x in R^d``), so a pytree is raveled into ``R^d`` first and the update is raveled
back; the feasible set, when given, is the Euclidean ball ``||x||_2 <= radius`` of that
whole vector.
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from sketchy.oco.metric import Metric, project_ball

# (g [d], state) -> (step [d] to subtract from x, metric A_t of the projection, new state)
StepFn = Callable[[jax.Array, Any], tuple[jax.Array, Metric, Any]]


def check_range(
    fn: str, name: str, value, *, low: float, high: float = math.inf, low_open: bool = False
) -> None:
    """Raise ``ValueError`` naming ``name`` and its range unless ``value`` lies in it.

    Traced values (e.g. a learning rate under ``jax.vmap`` of a hyperparameter grid) cannot be
    inspected and are let through.
    """
    if value is None or isinstance(value, jax.core.Tracer):
        return
    v = float(value)
    ok = (v > low if low_open else v >= low) and v <= high and not math.isnan(v)
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{fn}: {name} must be in {bracket}{low}, {high}], got {value!r}")


def check_rank(fn: str, rank) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{fn}: rank must be an integer >= 1, got {rank!r}")


def check_radius(fn: str, radius) -> None:
    if radius is not None:
        check_range(fn, "radius", radius, low=0.0, low_open=True)


def oco_transformation(
    name: str,
    init_vector: Callable[[int, Any], Any],
    step: StepFn,
    radius: float | None,
) -> optax.GradientTransformation:
    """An :class:`optax.GradientTransformation` from a rule on flat vectors.

    Args:
      name: of the algorithm, for error messages.
      init_vector: ``(d, dtype) -> state``; state arrays take the parameters' dtype.
      step: ``(g, state) -> (s, A, state)``: the algorithm moves to ``y = x - s``; it casts
        ``g`` to its state's dtype (the parameters').
      radius: ``None`` for unconstrained steps (the update is ``-s``); otherwise the update
        is ``Pi(x - s) - x`` with ``Pi`` the projection onto ``{||x||_2 <= radius}`` in the
        norm ``||.||_A`` (so ``update`` then needs ``params``).
    """

    def init(params):
        flat, _ = ravel_pytree(params)
        return init_vector(flat.shape[0], flat.dtype)

    def update(updates, state, params=None):
        g, unravel = ravel_pytree(updates)
        s, metric, state = step(g, state)
        if radius is None:
            return unravel(-s), state
        if params is None:
            raise ValueError(
                f"{name}: radius={radius} needs params in update(grads, state, params)"
            )
        x, _ = ravel_pytree(params)
        x = x.astype(s.dtype)
        return unravel(project_ball(metric, x - s, radius) - x), state

    return optax.GradientTransformation(init, update)


def euclidean_metric(d: int, dtype) -> Metric:
    """``A = I``: the projection is the Euclidean one (a radial rescale onto the ball)."""
    return Metric(None, jnp.ones((d,), dtype), jnp.zeros((), dtype))
