"""The first-order tail shared by every optimizer of the library (as in optax's ``adamw``).

``direction -> momentum (b1, optional Nesterov) -> decoupled weight decay -> -learning_rate``,
wrapped in :func:`optax.apply_if_finite` so that a step with a non-finite gradient is
skipped entirely: no parameter change and no state (momentum included) is touched.
"""

import optax

# apply_if_finite lets a non-finite update through after this many consecutive failures;
# we never want that (a NaN update destroys the parameters), so the bound is effectively off.
_NEVER = 2**31 - 2


def with_momentum_and_lr(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    weight_decay_mask=None,
    skip_nonfinite: bool = True,
) -> optax.GradientTransformation:
    """Chain a scale-only ``direction`` with momentum, weight decay and the learning rate.

    ``m <- b1 m + d``; update ``= -lr (m + wd * params)`` (Nesterov: ``d + b1 m``).
    """
    if not 0.0 <= b1 < 1.0:
        raise ValueError(f"b1 must be in [0, 1), got {b1!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    parts = [direction]
    if b1 > 0:
        parts.append(optax.trace(decay=b1, nesterov=nesterov))
    if weight_decay > 0:
        parts.append(optax.add_decayed_weights(weight_decay, weight_decay_mask))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    tx = optax.chain(*parts)
    return optax.apply_if_finite(tx, max_consecutive_errors=_NEVER) if skip_nonfinite else tx
