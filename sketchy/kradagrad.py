"""KrADagrad and KrADagrad*: Kronecker factors kept as *inverse* statistics (no inversion).

Mei, Moreno, Walters, "KrADagrad: Kronecker Approximation-Domination Gradient
Preconditioned Stochastic Optimization", UAI 2023 (arXiv 2305.19416); where the paper
leaves a detail open (denominator, axis schedule), the update rules follow the authors'
public implementation, as stated below at each choice.

Per block and axis ``i`` of an order-``p`` block, ``X_i`` approximates ``L_i^{-1}`` where
Shampoo keeps ``L_i = b2 L_i + G_(i) G_(i)^T`` (``L_0 = eps I``, so ``X_0 = I / eps``).
A statistics step on a ``d x n`` matricized gradient ``G`` (``M = G G^T``) is::

    X <- X / b2                          (if b2 < 1: the inverse of b2 L)
    X <- X - damping X X                 (optional, off by default; see below)
    X <- X - X M X / s                   (s: the denominator)

**Domination.** Woodbury gives the exact inverse of ``X^{-1} + M``:
``X - X G (I + A)^{-1} G^T X`` with ``A = G^T X G >= 0``. For any scalar
``s >= 1 + lambda_max(A)``, ``(I + A)^{-1} >= I / s``, hence

    X - X M X / s  >=  (X^{-1} + M)^{-1}  > 0        (Loewner order).

Since ``Y -> (Y^{-1} + M)^{-1}`` is monotone, induction from ``X_0 = L_0^{-1}`` gives
``X_t >= L_t^{-1}`` and ``X_t > 0`` at every step: ``X`` never needs an inversion, and its
positive root is well defined. The denominators offered all satisfy the bound:

- ``"trace"`` (default; the reference's released KrADagrad*, un-batched path, which its
  quadratic notebook runs): ``s = 1 + tr(M X) = 1 + tr(A) >= 1 + lambda_max(A)`` because
  ``A`` is PSD. It is the
  Sherman-Morrison formula, i.e. *exact*, whenever ``M`` has rank one, and then the
  largest valid step (Cauchy-Schwarz: ``||X g|| ||g|| >= g^T X g``, so Frobenius is looser).
- ``"trace_dim"``: ``s = d (1 + tr(M X))`` (a ``d_i``-scaled trace found in one version of
  the reference's KrADagrad* CPU path); it dominates too but shrinks ``X`` about ``d``
  times more slowly for no extra guarantee.
- ``"frobenius"``: ``s = 1 + ||X M||_F`` (the reference's KrADagrad and its batched
  KrADagrad* path). ``X M`` is similar to ``X^{1/2} M X^{1/2}``, whose non-zero eigenvalues
  are ``A``'s, so ``||X M||_F >= rho(X M) = lambda_max(A)``. For ``X`` near a multiple of
  ``I`` it is smaller than the trace when ``M`` has many comparable eigenvalues (full-rank
  gradients); it is larger for rank one, and for ill-conditioned ``X``.

Damping (the reference's ``X - eps X X``, a first-order approximation of
``(X^{-1} + damping I)^{-1}``) lies *below* the exact damped inverse (``1 - t <= 1/(1 + t)``)
and turns eigenvalues above ``1/damping`` negative, so it breaks the domination guarantee;
it is off by default because ``X_0 = I / eps`` already carries Shampoo's ``eps I``.

Why float32 is meant to suffice (the paper's claim; measured in
``results/tables/kradagrad_quadratic.md``): rounding perturbs ``X`` by about ``u ||X||``
(``u`` the unit roundoff, ``||X|| <= 1/eps`` when ``b2 = 1``), i.e. *absolutely*.
Directions of small curvature, where the preconditioner is large, keep full relative
precision; directions of large curvature, whose entries of ``X`` are tiny, are at worst
rounded to ``O(u / eps)`` (so ``P`` there is at most about ``(u / eps)^{1/(2p)}``): an
implicit relative regularization, not a blow-up. Shampoo float32 fails the other way:
``eigh`` of ``L`` loses its small eigenvalues, which the inverse root turns into the
largest preconditioner entries.

The preconditioner is a positive root of ``X`` (``eigh``; rounding negatives clipped to 0),
recomputed every ``update_freq`` steps: ``P_i = X_i^{1/(2p)}`` for KrADagrad*,
``P_i = X_i^{1/2}`` for KrADagrad; the direction is ``G x_1 P_1 ... x_p P_p``. A statistics
step that produces a non-finite ``X`` keeps the previous one and counts a failure.
"""

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sketchy.blocking import apply_along_axis, matricize, mode_product
from sketchy.grafting import as_graft
from sketchy.kronecker import (
    KroneckerRule,
    keep_if,
    per_axis_update,
    scale_by_kronecker,
    validate_b2,
    validate_update_freq,
)
from sketchy.matrix_power import psd_power
from sketchy.optimizer_chain import with_momentum_and_lr

HIGHEST = jax.lax.Precision.HIGHEST
Denominator = Literal["trace", "trace_dim", "frobenius"]
DENOMINATORS = ("trace", "trace_dim", "frobenius")


class KradFactor(NamedTuple):
    """One Kronecker factor: ``X ~ L^{-1}`` and its cached positive root (both ``d x d``).

    ``X`` is named ``statistics`` (it is the state the statistics step keeps, in inverse
    form) so that :func:`sketchy.memory.state_bytes` files it like Shampoo's ``L``.
    """

    statistics: jax.Array
    preconditioner: jax.Array


def _mm(a, b):
    return jnp.matmul(a, b, precision=HIGHEST)


def inverse_statistic_update(
    x: jax.Array,
    g: jax.Array,
    *,
    b2: float = 1.0,
    damping: float = 0.0,
    denominator: Denominator = "trace",
) -> jax.Array:
    """One KrAD step ``X <- X' - X' G G^T X' / s`` on a ``d x n`` matrix ``g`` (module doc).

    ``X' = X / b2`` (if ``b2 < 1``), then ``X' - damping X' X'`` (if ``damping > 0``).
    ``X M X`` is formed as ``(X G)(X G)^T`` when ``n <= 2d`` (cheaper, and symmetric PSD by
    construction), else as ``(X M) X`` symmetrized.
    """
    d, n = g.shape
    if b2 < 1.0:
        x = x / b2
    if damping > 0:
        x = x - damping * _mm(x, x)
    if n <= 2 * d:
        y = _mm(x, g)  # X G
        xmx = _mm(y, y.T)
        tr = jnp.sum(y * g)  # tr(G^T X G) = tr(M X)
        xm = _mm(y, g.T) if denominator == "frobenius" else None
    else:
        xm = _mm(x, _mm(g, g.T))
        xmx = _mm(xm, x)
        xmx = 0.5 * (xmx + xmx.T)
        tr = jnp.trace(xm)
    if denominator == "frobenius":
        s = 1.0 + jnp.linalg.norm(xm)
    elif denominator == "trace_dim":
        s = d * (1.0 + tr)
    else:
        s = 1.0 + tr
    new = x - xmx / s
    return 0.5 * (new + new.T)  # rounding asymmetry would bias eigh


def kradagrad_axis(step: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The axis KrADagrad updates at statistics step ``step`` (the reference's schedule).

    For ``step < p^2`` (``p = len(shape)``) the axes take turns. Afterwards, in each window
    ``[k^2, (k+1)^2)`` the first ``p`` steps go to axes ``0..p-1`` and the remaining
    ``2k + 1 - p`` to the largest axis (the first one on ties): every other axis gets
    ``O(sqrt(steps))`` updates, which keeps the per-step cost at one factor's while the
    factor with the most parameters is refreshed most often.
    """
    p = len(shape)
    largest = max(range(p), key=lambda i: (shape[i], -i))
    step = jnp.asarray(step, jnp.int32)
    # Integer square root: the float estimate is off by at most one either way.
    r = jnp.floor(jnp.sqrt(step.astype(jnp.float32))).astype(jnp.int32)
    r = jnp.where(r * r > step, r - 1, r)
    r = jnp.where((r + 1) * (r + 1) <= step, r + 1, r)
    offset = step - r * r
    late = jnp.where(offset < p, offset, largest)
    return jnp.where(step < p * p, step % p, late).astype(jnp.int32)


def _rule(
    *, one_axis, b2, eps, damping, denominator, update_freq, root_exponent, dtype
) -> KroneckerRule:
    """KrADagrad (``one_axis``) or KrADagrad* as a :class:`KroneckerRule`."""

    def init_factor(d):
        # KrADagrad reads P_j (j != i) before the first refresh, so P_0 must be X_0's root;
        # KrADagrad* refreshes P at step 0 before using it.
        scale = (1.0 / eps) ** root_exponent if one_axis else 1.0
        return KradFactor(jnp.eye(d, dtype=dtype) / eps, jnp.eye(d, dtype=dtype) * scale)

    def update_factor(f, g):
        new = inverse_statistic_update(
            f.statistics, g.astype(dtype), b2=b2, damping=damping, denominator=denominator
        )
        ok = jnp.all(jnp.isfinite(new))
        return keep_if(ok, f._replace(statistics=new), f), (~ok).astype(jnp.int32)

    def update_axis(axis, factors, block):
        y = block.astype(dtype)
        for j, f in enumerate(factors):
            if j != axis:
                y = apply_along_axis(lambda z, f=f: mode_product(f.preconditioner, z), y, j)
        new, bad = update_factor(factors[axis], matricize(y, axis))
        return tuple(new if j == axis else f for j, f in enumerate(factors)), bad

    def one_axis_update(factors, block, count):
        branches = [lambda fs, b, a=a: update_axis(a, fs, b) for a in range(len(factors))]
        # count is not batched over blocks, so this stays a real switch: one d^3 update.
        return jax.lax.switch(kradagrad_axis(count, block.shape), branches, factors, block)

    def refresh_factor(f, exponent):
        root, _ = psd_power(f.statistics, exponent)
        ok = jnp.all(jnp.isfinite(root))
        return keep_if(ok, f._replace(preconditioner=root), f), ~ok

    def apply_factor(f, y, exponent):
        del exponent  # the preconditioner is the inverse root already
        return mode_product(f.preconditioner, y.astype(dtype)).astype(y.dtype)

    return KroneckerRule(
        init_factor=init_factor,
        update_block=one_axis_update if one_axis else per_axis_update(update_factor),
        refresh_factor=refresh_factor,
        apply_factor=apply_factor,
        stats_every=1,
        refresh_every=update_freq,
    )


def scale_by_kradagrad_family(
    *,
    one_axis: bool,
    block_size: int = 1024,
    b2: float = 1.0,
    eps: float = 1e-6,
    denominator: Denominator = "trace",
    damping: float = 0.0,
    update_freq: int = 10,
    start_preconditioning_step: int = 10,
    graft: str | optax.GradientTransformation | None = "adagrad",
    graft_eps: float = 1e-8,
    max_precond_dim: int = 4096,
    exponent_override: float | None = None,
    dtype=jnp.float32,
) -> optax.GradientTransformation:
    """KrADagrad (``one_axis=True``) or KrADagrad* (``False``): the preconditioned, grafted
    direction (no momentum, no learning rate). The two differ only in that flag; use
    :func:`scale_by_kradagrad` and :func:`scale_by_kradagrad_star`, whose docstrings state
    the update rules.

    Args:
      block_size, start_preconditioning_step, graft_eps, max_precond_dim: as in
        :func:`sketchy.scale_by_shampoo`.
      b2: ``L <- b2 L + G G^T`` in inverse form (``X <- X / b2`` first); 1.0 (default, the
        paper's experiments): a sum, as in AdaGrad. Also the graft's EMA factor.
      eps: ``X_0 = I / eps``, i.e. ``L_0 = eps I``.
      denominator: ``"trace"`` (default), ``"trace_dim"`` or ``"frobenius"`` (module doc).
      damping: the reference's ``X <- X - damping X X`` before each step, in ``[0, eps)``;
        breaks the domination guarantee (module doc).
      update_freq: recompute the roots every this many steps (statistics: every step).
      graft: as in :func:`sketchy.scale_by_shampoo`; ``rmsprop``/``adafactor`` need
        ``b2 < 1``, hence the default ``adagrad``.
      exponent_override: ``P_i = X_i^exponent_override`` instead of the variant's exponent
        (KrADagrad*: ``1/(2p)``; KrADagrad: ``1/2``, the reference's ONS-style option is 1).
      dtype: of ``X``, ``P`` and ``eigh``; float64 needs ``jax_enable_x64``.
    """
    validate_b2(b2)
    validate_update_freq(update_freq)
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (X starts at I / eps), got {eps!r}")
    if denominator not in DENOMINATORS:
        raise ValueError(f"denominator must be one of {DENOMINATORS}, got {denominator!r}")
    # X - damping X^2 stays PSD only while damping * lambda_max(X) < 1; lambda_max(X_0) = 1/eps.
    if not 0.0 <= damping * (1.0 / eps) < 1.0:
        raise ValueError(f"damping must be in [0, eps) = [0, {eps!r}), got {damping!r}")
    if exponent_override is not None and not exponent_override > 0:
        raise ValueError(f"exponent_override must be > 0 or None, got {exponent_override!r}")
    root = (exponent_override or 0.5) if one_axis else exponent_override
    rule = _rule(
        one_axis=one_axis,
        b2=b2,
        eps=eps,
        damping=damping,
        denominator=denominator,
        update_freq=update_freq,
        root_exponent=root,
        dtype=dtype,
    )
    return scale_by_kronecker(
        rule,
        graft=as_graft(graft, b2, graft_eps),
        block_size=block_size,
        max_precond_dim=max_precond_dim,
        start_preconditioning_step=start_preconditioning_step,
        exponent_override=root,
    )


def kradagrad_family(
    learning_rate: optax.ScalarOrSchedule,
    *,
    one_axis: bool,
    b1: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    weight_decay_mask=None,
    block_size: int = 1024,
    b2: float = 1.0,
    eps: float = 1e-6,
    denominator: Denominator = "trace",
    damping: float = 0.0,
    update_freq: int = 10,
    start_preconditioning_step: int = 10,
    graft: str | optax.GradientTransformation | None = "adagrad",
    graft_eps: float = 1e-8,
    max_precond_dim: int = 4096,
    exponent_override: float | None = None,
    dtype=jnp.float32,
) -> optax.GradientTransformation:
    """:func:`scale_by_kradagrad_family` + momentum ``b1``, weight decay, -lr
    (:func:`sketchy.optimizer_chain.with_momentum_and_lr`)."""
    direction = scale_by_kradagrad_family(
        one_axis=one_axis,
        block_size=block_size,
        b2=b2,
        eps=eps,
        denominator=denominator,
        damping=damping,
        update_freq=update_freq,
        start_preconditioning_step=start_preconditioning_step,
        graft=graft,
        graft_eps=graft_eps,
        max_precond_dim=max_precond_dim,
        exponent_override=exponent_override,
        dtype=dtype,
    )
    return with_momentum_and_lr(
        direction,
        learning_rate,
        b1=b1,
        nesterov=nesterov,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
    )


def _variant(fn, one_axis: bool, doc: str):
    variant = functools.partial(fn, one_axis=one_axis)
    variant.__doc__ = doc
    return variant


_STAR_RULE = """
    Every step, every axis ``i`` of every block: ``X_i <- X_i - X_i M X_i / s`` with
    ``M = G_(i) G_(i)^T`` (module doc); every ``update_freq`` steps ``P_i = X_i^{1/(2p)}``;
    direction ``D = G x_1 P_1 ... x_p P_p``, grafted like Shampoo's
    (``D ||graft(G)|| / ||D||``). Costs match Shampoo's (two ``d x d`` matrices per factor,
    one ``eigh`` per refresh) with no inversion.

    Arguments: :func:`scale_by_kradagrad_family`.
    Reference: Mei, Moreno, Walters, UAI 2023 (arXiv 2305.19416), "KrADagrad*".
"""

_ONE_AXIS_RULE = """
    One axis per statistics step (:func:`kradagrad_axis`; the step count is the statistics
    step since statistics run every step): for that axis ``i``, ``Gh = G x_{j != i} P_j``
    (the gradient preconditioned on every *other* axis) and
    ``X_i <- X_i - X_i Gh_(i) Gh_(i)^T X_i / s``; every ``update_freq`` steps
    ``P_i = X_i^{1/2}`` whatever the order; direction ``D = G x_1 P_1 ... x_p P_p``,
    grafted like Shampoo's.

    Why ``1/2`` for every order: each statistic is accumulated from a gradient already
    whitened by the other factors. For a matrix, ``L_1 = sum G X_2 G^T`` with
    ``X_2 ~ R^{-1}``, so ``L_1 (x) R`` fits the full-matrix AdaGrad statistic
    ``sum vec(G) vec(G)^T`` itself (up to a scalar), not its ``p``-th power as Shampoo's
    factors do; full-matrix AdaGrad's ``-1/2`` then applies to each factor.

    Arguments: :func:`scale_by_kradagrad_family`. The reference starts from ``X_0 = I`` with
    ``damping = 1e-8`` and the ``"frobenius"`` denominator: ``eps=1.0, damping=1e-8``.
    Reference: Mei, Moreno, Walters, UAI 2023 (arXiv 2305.19416), "KrADagrad".
"""

_TAIL = """
    Then ``m <- b1 m + d`` (Nesterov by default), ``update = -lr (m + wd * params)``:
    arguments ``learning_rate, b1, nesterov, weight_decay, weight_decay_mask`` and those of
    :func:`scale_by_kradagrad_family`.
"""

scale_by_kradagrad_star = _variant(
    scale_by_kradagrad_family, False, "KrADagrad*'s grafted direction.\n" + _STAR_RULE
)
scale_by_kradagrad = _variant(
    scale_by_kradagrad_family, True, "KrADagrad's grafted direction.\n" + _ONE_AXIS_RULE
)
kradagrad_star = _variant(
    kradagrad_family, False, "KrADagrad* with momentum and learning rate.\n" + _STAR_RULE + _TAIL
)
kradagrad = _variant(
    kradagrad_family, True, "KrADagrad with momentum and learning rate.\n" + _ONE_AXIS_RULE + _TAIL
)
