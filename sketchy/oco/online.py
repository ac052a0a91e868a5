"""Thin drivers for the paper's OCO experiments: one pass of online learning, jitted, with
``jax.lax.scan`` over rounds and ``jax.vmap`` over a hyperparameter grid.

- Online logistic regression (Appendix A): predict with ``w_t``, suffer the log loss and
  the 0-1 loss of example ``t``, then update; ``w_1 = 0``.
- Online linear optimization on the paper's Observation 2 instance: ``f_t(x) = <x, g_t>``
  over a Euclidean ball, regret against the best fixed point in hindsight.
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

# (**hyperparameters) -> transformation; the hyperparameters arrive as traced scalars.
MakeTx = Callable[..., optax.GradientTransformation]


def logistic_loss_and_grad(w: jax.Array, x: jax.Array, y: jax.Array):
    """``log(1 + exp(-y <w, x>))`` and its gradient in ``w``, for a label ``y`` in ``{-1, 1}``."""
    margin = y * jnp.dot(w, x, precision=jax.lax.Precision.HIGHEST)
    loss = jnp.logaddexp(0.0, -margin)
    return loss, -y * jax.nn.sigmoid(-margin) * x


def _grid_size(hparams: Mapping[str, jax.Array]) -> int:
    sizes = {np.shape(v)[0] for v in hparams.values()}
    if len(sizes) != 1:
        raise ValueError(f"hparams must be 1-D arrays of one common length, got sizes {sizes}")
    return sizes.pop()


def run_logistic(
    make_tx: MakeTx, hparams: Mapping[str, jax.Array], x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One online pass of logistic regression per hyperparameter setting.

    Args:
      make_tx: builds the optimizer from keyword hyperparameters (e.g.
        ``functools.partial(sketchy.oco.s_adagrad, rank=8)``).
      hparams: name -> ``[H]`` values; setting ``h`` is ``make_tx(**{n: v[h]})``.
      x: ``[n, d]`` features (intercept included); the dtype of ``w``.
      y: ``[n]`` labels in ``{-1, +1}``.

    Returns:
      ``(log_loss, error)``, each ``[H, n]``: the loss of example ``t`` under ``w_t`` (before
      the update on it), and whether ``w_t`` misclassified it (positive iff ``<w, x> > 0``).
    """
    _grid_size(hparams)
    x = jnp.asarray(x)
    y = jnp.asarray(y, x.dtype)

    def one_setting(hp):
        tx = make_tx(**hp)
        w0 = jnp.zeros((x.shape[1],), x.dtype)

        def round_(carry, example):
            w, state = carry
            xi, yi = example
            loss, grad = logistic_loss_and_grad(w, xi, yi)
            wrong = (jnp.dot(w, xi) > 0) != (yi > 0)
            updates, state = tx.update(grad, state, w)
            return (optax.apply_updates(w, updates), state), (loss, wrong.astype(x.dtype))

        _, (losses, errors) = jax.lax.scan(round_, (w0, tx.init(w0)), (x, y))
        return losses, errors

    return jax.jit(jax.vmap(one_setting))(dict(hparams))


def observation2_gradients(
    key: jax.Array,
    num_rounds: int,
    r: int,
    d: int | None = None,
    dtype=jnp.float32,
    *,
    signed: bool = True,
) -> jax.Array:
    """Paper Observation 2: ``g_t`` i.i.d. over ``r`` orthonormal vectors ``v_1..v_r`` of ``R^d``.

    ``signed=True`` (default): ``g_t = eps_t v_{i_t}`` with ``i_t`` uniform on ``{1..r}`` and an
    independent Rademacher sign ``eps_t``, so ``E g_t = 0`` and ``E g_t g_t^T = V V^T / r``.
    ``signed=False``: ``g_t = v_{i_t}`` (mean ``V 1 / r``, norm ``1 / sqrt(r)``), the variant
    without signs; same second moment.

    A consequence of ``E g_t = 0`` that any use of the signed instance must keep in mind:
    ``x_t`` depends on ``g_1..g_{t-1}`` only, so ``E <x_t, g_t> = 0`` and the expected regret on
    the ball of radius ``R`` is ``R E||sum_t g_t||`` (about ``R sqrt(T)``) for *every* online
    algorithm; only the unsigned variant lets the algorithms' regrets differ in expectation.

    The vectors are the columns of a random orthogonal matrix (so no coordinate basis favours
    diagonal methods); ``d`` defaults to ``r``.

    Returns:
      ``[num_rounds, d]`` gradients of unit norm.
    """
    d = r if d is None else d
    if not 1 <= r <= d:
        raise ValueError(f"observation2_gradients: r must be in [1, d={d}], got {r}")
    k_basis, k_pick, k_sign = jax.random.split(key, 3)
    basis, _ = jnp.linalg.qr(jax.random.normal(k_basis, (d, r), dtype))
    grads = basis.T[jax.random.randint(k_pick, (num_rounds,), 0, r)]
    if signed:
        grads = grads * jax.random.rademacher(k_sign, (num_rounds, 1), dtype)
    return grads


def run_linear_regret(
    make_tx: MakeTx,
    hparams: Mapping[str, jax.Array],
    grads: jax.Array,
    radius: float,
    horizons: np.ndarray,
) -> jax.Array:
    """Regret of online linear optimization ``f_t(x) = <x, g_t>`` on ``{||x||_2 <= radius}``.

    ``Regret_T = sum_{t<=T} <x_t, g_t> - min_{||x|| <= radius} sum_{t<=T} <x, g_t>
    = sum_{t<=T} <x_t, g_t> + radius ||sum_{t<=T} g_t||`` (the minimizer is
    ``-radius S / ||S||`` for ``S = sum_{t<=T} g_t``, by Cauchy-Schwarz), reported at every
    ``T`` in ``horizons`` from one run (the algorithms do not know ``T``), with ``x_1 = 0``.

    Args:
      make_tx: builds a *projecting* optimizer (``radius=radius``) from the hyperparameters.
      hparams: name -> ``[H]`` values.
      grads: ``[T_max, d]`` the gradient sequence, or ``[S, T_max, d]``: ``S`` sequences (e.g.
        seeds) run in one compiled program.
      radius: of the feasible ball.
      horizons: increasing ``T`` values in ``[1, T_max]``.

    Returns:
      ``[H, len(horizons)]`` regrets (``[S, H, len(horizons)]`` for ``S`` sequences).
    """
    _grid_size(hparams)
    idx = jnp.asarray(np.asarray(horizons) - 1)

    def one_setting(hp, seq):
        tx = make_tx(**hp)
        x0 = jnp.zeros((seq.shape[1],), seq.dtype)

        def round_(carry, g):
            x, state = carry
            updates, state = tx.update(g, state, x)
            return (optax.apply_updates(x, updates), state), jnp.dot(x, g)

        _, losses = jax.lax.scan(round_, (x0, tx.init(x0)), seq)
        return jnp.cumsum(losses)[idx]

    def one_sequence(seq):
        best = -radius * jnp.linalg.norm(jnp.cumsum(seq, axis=0)[idx], axis=1)
        return jax.vmap(one_setting, in_axes=(0, None))(dict(hparams), seq) - best

    run = jax.vmap(one_sequence) if grads.ndim == 3 else one_sequence
    return jax.jit(run)(grads)


def fit_exponent(horizons, regrets) -> float:
    """Least-squares slope of ``log(regret)`` against ``log(T)``: ``regret ~ T^slope``."""
    slope, _ = np.polyfit(np.log(np.asarray(horizons, float)), np.log(np.asarray(regrets)), 1)
    return float(slope)
