"""The jitted pieces of the trainer: the train state and one optimization step."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


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
    metrics = {
        "train/loss": loss,
        "train/grad_norm": optax.tree.norm(grads),
        "train/update_norm": optax.tree.norm(updates),
        "train/param_norm": optax.tree.norm(params),
        "train/learning_rate": schedule(state.step) if callable(schedule) else schedule,
    }
    new = TrainState(state.step + 1, params, model_state, opt_state, state.rng)
    return new, metrics
