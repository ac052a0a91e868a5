"""The first-order tail shared by every optimizer of the library (as in optax's ``adamw``).

``direction -> momentum (b1, optional Nesterov) -> decoupled weight decay -> -learning_rate``,
wrapped in :func:`optax.apply_if_finite` so that a step with a non-finite gradient is
skipped entirely: no parameter change and no state (momentum included) is touched.
"""

import jax
import jax.numpy as jnp
import optax

from sketchy.kronecker import all_finite

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
    return apply_if_finite(tx) if skip_nonfinite else tx


def apply_if_finite(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """:func:`optax.apply_if_finite` (same state, same semantics, bound ``_NEVER``) with one
    float-sum finiteness check (:func:`sketchy.kronecker.all_finite`) in place of optax's
    per-tensor ``all(isfinite)``, whose predicate reductions dominate compile time on CPU.

    A step whose incoming updates are not all finite returns zeros and leaves the inner
    state unchanged; the counters are optax's.
    """
    base = optax.apply_if_finite(inner, max_consecutive_errors=_NEVER)

    def update_fn(updates, state, params=None):
        finite = all_finite(jax.tree.leaves(updates))
        notfinite_count = jnp.where(
            finite, jnp.zeros([], jnp.int32), optax.safe_increment(state.notfinite_count)
        )

        def accept(_):
            return inner.update(updates, state.inner_state, params)

        def reject(_):
            return optax.tree.zeros_like(updates), state.inner_state

        keep = finite | (notfinite_count > _NEVER)
        updates, inner_state = jax.lax.cond(keep, accept, reject, None)
        total = state.total_notfinite
        return updates, optax.ApplyIfFiniteState(
            notfinite_count=notfinite_count,
            last_finite=finite,
            total_notfinite=jnp.where(finite, total, optax.safe_increment(total)),
            inner_state=inner_state,
        )

    return optax.GradientTransformation(base.init, update_fn)
