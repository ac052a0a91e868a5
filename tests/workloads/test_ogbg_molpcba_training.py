"""ogbg_molpcba end to end: shards are independent graph batches, evaluate runs, adam learns."""

import functools

import jax
import numpy as np
import optax
import pytest

from workloads.ogbg_molpcba import OgbgMolpcba, mini_dataset

MOLECULES = 300


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.getbasetemp() / "ogbg_molpcba_data"  # shared by test files
    mini_dataset.prepare(data_dir, MOLECULES, progress=False)
    return str(data_dir)


def test_shards_are_independent_and_evaluate_reports_metrics(data_dir):
    # A one-block model compiles fast; message passing is what could leak across shards.
    workload = OgbgMolpcba(
        size="tiny", num_message_passing_steps=1, latent_dim=16, hidden_dims=[16],
        data_dir=data_dir, max_molecules=MOLECULES,
    )  # fmt: skip
    params, state = jax.jit(workload.init)(jax.random.key(0))
    forward = jax.jit(functools.partial(workload.apply, rng=None, train=False))
    batch = next(workload.batches("train", 16, seed=0, num_shards=2))
    logits, _ = forward(params, state, batch)
    budget = workload.budget(16, 2)
    for s in range(2):
        shard = {k: np.split(v, 2)[s] for k, v in batch.items()}
        for key in ("senders", "receivers"):
            shard[key] = shard[key] - s * budget.n_node  # local node indices
        alone, _ = forward(params, state, shard)
        np.testing.assert_allclose(np.split(np.asarray(logits), 2)[s], alone, atol=1e-5)

    metrics = workload.evaluate(params, state, "validation", global_batch_size=16, num_shards=2)
    assert set(metrics) == {
        "validation/loss",
        "validation/accuracy",
        "validation/mean_average_precision",
    }
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
    assert 0.0 < metrics["validation/mean_average_precision"] <= 1.0
    assert 0.0 < metrics["validation/accuracy"] <= 1.0


def test_a_few_adam_steps_reduce_the_training_loss(data_dir):
    # Without dropout the loss returned by each step is the loss of the current parameters.
    workload = OgbgMolpcba(size="tiny", dropout_rate=0.0, data_dir=data_dir,
                           max_molecules=MOLECULES)  # fmt: skip
    params, state = jax.jit(workload.init)(jax.random.key(0))
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    def mean_loss(params, batch):
        total, (count, _) = workload.loss(params, state, batch, rng=None, train=True)
        return total / count

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(mean_loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    batches = workload.batches("train", 32, seed=0)
    fixed = [next(batches) for _ in range(4)]
    losses = []
    for i in range(24):
        params, opt_state, loss = step(params, opt_state, fixed[i % 4])
        losses.append(float(loss))
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])
