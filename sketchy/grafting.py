"""Layer-wise grafting: borrow the per-tensor step size of a first-order method.

Shampoo-family directions have an arbitrary overall scale (the statistics' normalization,
the root exponent, epsilon). Grafting (Agarwal et al. 2020) fixes it per parameter tensor:
``update = P g * ||graft(g)|| / ||P g||``. The graft directions are optax transforms, so
their state, numerics and checkpointing are optax's; names are resolved to transforms once,
by :func:`as_graft`, at the optimizer's entry.
"""

import jax
import jax.numpy as jnp
import optax

GRAFTS = (
    "rmsprop",
    "rmsprop_uncorrected",
    "rmsprop_normalized",
    "adagrad",
    "adafactor",
    "sgd",
    "none",
)
RMS_GRAFTS = ("rmsprop", "rmsprop_uncorrected", "rmsprop_normalized", "adafactor")


def _bias_corrected_decay(b2: float):
    """Per-step decay that makes an EMA equal to the bias-corrected one (Adam's ``nu_hat``).

    ``beta_t = b2 (1 - b2^(t-1)) / (1 - b2^t)`` with ``t = step + 1``; it is 0 at the first
    step, so the first estimate is ``g^2`` rather than ``(1 - b2) g^2``.
    """

    def fn(step, _unused_decay_rate):
        t = jnp.asarray(step, jnp.float32) + 1.0
        return b2 * (1.0 - b2 ** (t - 1.0)) / (1.0 - b2**t)

    return fn


def _normalize_each() -> optax.GradientTransformation:
    """``g / (||g|| + 1e-25)`` per tensor (``distributed_shampoo``'s ``*_NORMALIZED`` grafts)."""

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: g / (jnp.linalg.norm(g.ravel()) + 1e-25), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def graft_transform(graft: str, b2: float, eps: float) -> optax.GradientTransformation:
    """The first-order direction whose per-tensor norm the preconditioned update takes.

    - ``rmsprop`` (default): ``g / (sqrt(nu_hat) + eps)`` with ``nu`` the ``b2``-EMA of
      ``g^2``, bias-corrected (Adam without momentum). O(mn) state. Without the bias
      correction the graft norm at step ``t`` is ``1 / sqrt(1 - b2^t)`` too large (31.6x at
      the first step for ``b2 = 0.999``), a warm-up the learning-rate schedule has to absorb.
    - ``rmsprop_uncorrected``: ``g / (sqrt(nu) + eps)``, ``nu = b2 nu + (1 - b2) g^2`` from 0,
      no bias correction: ``distributed_shampoo``'s ``RMSPROP`` (the paper's runs).
    - ``rmsprop_normalized``: the same on ``g / ||g||`` (per tensor):
      ``distributed_shampoo``'s ``RMSPROP_NORMALIZED``, AlgoPerf's Shampoo baseline default.
    - ``adagrad``: ``g / (sqrt(sum g^2) + eps)``. O(mn) state.
    - ``adafactor``: RMSProp with Adafactor's factored second moment (row and column
      EMAs, O(m + n) state for tensors whose two largest dims are >= 128), bias-corrected.
    - ``sgd`` and ``none``: the gradient itself (``none`` also disables the rescaling).
    """
    if graft in RMS_GRAFTS and not b2 < 1.0:
        # An EMA with b2 = 1 never moves from 0, and its bias correction divides 0 by 0.
        raise ValueError(
            f"graft={graft!r} averages g^2 with b2 and needs b2 < 1, got b2={b2!r}; "
            "with b2=1 (sums of outer products) use graft='adagrad'"
        )
    if graft == "rmsprop":
        return optax.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True)
    if graft == "rmsprop_uncorrected":
        return optax.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=False)
    if graft == "rmsprop_normalized":
        rms = optax.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=False)
        return optax.chain(_normalize_each(), rms)
    if graft == "adagrad":
        return optax.scale_by_rss(initial_accumulator_value=0.0, eps=eps)
    if graft == "adafactor":
        # optax adds eps inside the sqrt (epsilon ** 2 there is the usual Adafactor eps1).
        return optax.scale_by_factored_rms(
            decay_rate=b2, epsilon=eps * eps, decay_rate_fn=_bias_corrected_decay(b2)
        )
    if graft in ("sgd", "none"):
        return optax.identity()
    raise ValueError(f"graft must be one of {GRAFTS}, got {graft!r}")


def as_graft(
    graft: str | optax.GradientTransformation | None, b2: float, eps: float
) -> optax.GradientTransformation | None:
    """The graft of :func:`sketchy.kronecker.scale_by_kronecker` from an optimizer's argument.

    A name of :data:`GRAFTS` is built by :func:`graft_transform` with the optimizer's ``b2``
    and ``eps``; any scale-only optax transform (e.g. ``optax.scale_by_adam(b1=0.0)``) is
    used as it is; ``"none"`` or ``None``: no grafting (the direction is not rescaled).
    """
    if graft is None or graft == "none":
        return None
    if isinstance(graft, str):
        return graft_transform(graft, b2, eps)
    if isinstance(graft, optax.GradientTransformation):
        return graft
    raise ValueError(
        f"graft must be one of {GRAFTS}, an optax.GradientTransformation or None, got {graft!r}"
    )


def graft_norm(direction: jax.Array, graft_direction: jax.Array) -> jax.Array:
    """``direction * ||graft_direction|| / ||direction||`` (0 where ``direction`` is 0)."""
    norm = jnp.linalg.norm(direction.ravel())
    graft = jnp.linalg.norm(graft_direction.ravel())
    return direction * jnp.where(norm > 0, graft / jnp.where(norm > 0, norm, 1.0), 0.0)
