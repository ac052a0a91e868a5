"""The jitted pieces of the trainer: the train state and one optimization step."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sketchy.kronecker import all_finite as finite_leaves


class TrainState(NamedTuple):
    """Everything a checkpoint must hold to continue a run exactly (data position = step)."""

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array


def init_train_state(workload, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    init_rng, rng = jax.random.split(rng)
    params, model_state = workload.init(init_rng)
    return TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params), rng)


def train_step(workload, tx, schedule, state: TrainState, batch) -> tuple[TrainState, dict]:
    """One step on the mean loss ``sum / count``; returns the new state and scalar metrics."""
    # A per-step key derived from (seed, step): a resumed run draws the same dropout masks.
    rng = jax.random.fold_in(state.rng, state.step)

    def mean_loss(params):
        total, (count, model_state) = workload.loss(
            params, state.model_state, batch, rng=rng, train=True
        )
        return total / jnp.maximum(count, 1), model_state

    (loss, model_state), grads = jax.value_and_grad(mean_loss, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # Non-finite policy: a step whose new parameters, model state or optimizer state are not
    # finite is dropped whole (the previous ones are kept), so no state ever holds NaN/Inf.
    # The library's optimizers skip a non-finite gradient themselves (apply_if_finite: their
    # skip counters advance, the rest is untouched); optax's Adam/SGD do not, and are
    # protected here. Either way the step is flagged; the trainer stops after
    # trainer.max_nonfinite_steps flagged steps in a row.
    new_ok = all_finite((params, model_state, opt_state))
    grads_ok = jnp.isfinite(loss) & all_finite(grads)
    params, model_state, opt_state = jax.tree.map(
        lambda new, old: jnp.where(new_ok, new, old),
        (params, model_state, opt_state),
        (state.params, state.model_state, state.opt_state),
    )
    metrics = {
        "train/loss": loss,
        "train/grad_norm": optax.tree.norm(grads),
        "train/update_norm": optax.tree.norm(updates),
        "train/param_norm": optax.tree.norm(params),
        "train/learning_rate": schedule(state.step) if callable(schedule) else schedule,
        "train/nonfinite_step": (~(new_ok & grads_ok)).astype(jnp.int32),
    }
    new = TrainState(state.step + 1, params, model_state, opt_state, state.rng)
    return new, metrics


def all_finite(tree) -> jax.Array:
    """Whether every floating-point entry of ``tree`` is finite (a scalar bool).

    The library's float-sum check (:func:`sketchy.kronecker.all_finite`), not
    ``all(isfinite(leaf))`` per leaf: on XLA's CPU backend the predicate ``and``-reductions
    expand into hundreds of thousands of instructions, and the flag, used by the select of
    every leaf, was copied into each leaf's fusion. Measured on ResNet-50's whole train step
    (batch 64, 32 px): compile 124.7 s -> 9.5 s with AdamW, 225.8 s -> 22.4 s with Sketchy.
    """
    inexact = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return finite_leaves(inexact)
