"""mnist_autoencoder: data splits, batch shapes, determinism, exact resume, eval coverage,
the model and loss, and a few Adam steps on real digits."""

import inspect
import itertools
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from omegaconf import OmegaConf

from workloads.mnist_autoencoder import MnistAutoencoder
from workloads.mnist_autoencoder.data import load_images, split_indices


@pytest.fixture(scope="module")
def tiny():
    return MnistAutoencoder(size="tiny")


def test_splits_are_disjoint_stratified_and_cover_the_data():
    images, labels = load_images()
    assert images.shape == (5000, 784) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() == 1.0
    idx = split_indices(labels, seed=0, num_validation=500, num_test=500)
    sizes = {k: len(v) for k, v in idx.items()}
    assert sizes == {"train": 4000, "validation": 500, "test": 500}
    everything = np.concatenate(list(idx.values()))
    assert len(np.unique(everything)) == 5000
    for split in ("validation", "test"):
        assert np.all(np.bincount(labels[idx[split]], minlength=10) == 50)
    again = split_indices(labels, seed=0, num_validation=500, num_test=500)
    assert all(np.array_equal(idx[k], again[k]) for k in idx)
    other = split_indices(labels, seed=1, num_validation=500, num_test=500)
    assert not np.array_equal(idx["test"], other["test"])
    with pytest.raises(ValueError, match="num_validation"):
        split_indices(labels, seed=0, num_validation=4000, num_test=1000)


@pytest.mark.parametrize("num_shards", [1, 4])
def test_train_batches_shapes_and_determinism(tiny, num_shards):
    first = list(itertools.islice(tiny.batches("train", 64, seed=3, num_shards=num_shards), 5))
    again = list(itertools.islice(tiny.batches("train", 64, seed=3, num_shards=num_shards), 5))
    other = next(tiny.batches("train", 64, seed=4, num_shards=num_shards))
    fake = tiny.fake_batch(64, num_shards)
    for b, c in zip(first, again, strict=True):
        assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
            k: (v.shape, v.dtype) for k, v in fake.items()
        }
        assert all(v.shape[0] % num_shards == 0 for v in b.values())
        assert np.all(b["weights"] == 1)
        np.testing.assert_array_equal(b["inputs"], c["inputs"])
    assert not np.array_equal(first[0]["inputs"], other["inputs"])
    with pytest.raises(ValueError, match="num_shards"):
        tiny.batches("train", 30, seed=0, num_shards=4)


def test_train_epochs_cover_every_image_and_resume_exactly():
    w = MnistAutoencoder(size="tiny", max_train_examples=100)
    stream = list(itertools.islice(w.batches("train", 30, seed=7), 20))
    # 20 batches of 30 = 6 epochs of 100: every epoch is a permutation of the train split.
    flat = np.concatenate([b["inputs"] for b in stream])
    train = w._split("train")
    for e in range(6):
        epoch = flat[e * 100 : (e + 1) * 100]
        assert sorted(map(bytes, epoch)) == sorted(map(bytes, train))
    assert not np.array_equal(flat[:100], flat[100:200])  # reshuffled per epoch
    for start in (1, 3, 7, 13):
        resumed = list(itertools.islice(w.batches("train", 30, seed=7, start_step=start), 4))
        for b, want in zip(resumed, stream[start : start + 4], strict=True):
            np.testing.assert_array_equal(b["inputs"], want["inputs"])


@pytest.mark.parametrize("split", ["validation", "test"])
def test_eval_is_one_padded_pass(tiny, split):
    batches = list(tiny.batches(split, 96, seed=0))
    assert len(batches) == -(-500 // 96)
    weights = np.concatenate([b["weights"] for b in batches])
    assert weights.sum() == 500 and np.all(weights[500:] == 0)
    inputs = np.concatenate([b["inputs"] for b in batches])[:500]
    np.testing.assert_array_equal(inputs, tiny._split(split))
    assert np.all(batches[-1]["inputs"][500 - 96 * (len(batches) - 1) :] == 0)


def test_loss_is_summed_over_pixels_and_padding_free(tiny):
    params, state = tiny.init(jax.random.key(0))
    loss = jax.jit(lambda p, b: tiny.loss(p, state, b, rng=None, train=True))
    batch = next(tiny.batches("validation", 8, seed=0))
    total, (count, _) = loss(params, batch)
    logits, _ = jax.jit(lambda p, b: tiny.apply(p, state, b, rng=None, train=False))(params, batch)
    p = np.asarray(jax.nn.sigmoid(logits), np.float64)
    x = batch["inputs"]
    dense = -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum()
    np.testing.assert_allclose(float(total), float(dense), rtol=1e-4)
    assert float(count) == 8
    # Zero-weight rows change neither the sum nor the count.
    padded = {
        "inputs": np.concatenate([x, np.ones_like(x[:3])]),
        "weights": np.concatenate([batch["weights"], np.zeros(3, np.float32)]),
    }
    total2, (count2, _) = loss(params, padded)
    np.testing.assert_allclose(float(total2), float(total), rtol=1e-6)
    assert float(count2) == 8


def test_paper_model_shapes():
    w = MnistAutoencoder(size="paper")
    params = jax.eval_shape(w.init, jax.random.key(0))[0]
    kernels = [params[f"Dense_{i}"]["kernel"].shape for i in range(8)]
    assert kernels == [
        (784, 1000),
        (1000, 500),
        (500, 250),
        (250, 30),
        (30, 250),
        (250, 500),
        (500, 1000),
        (1000, 784),
    ]
    assert sum(np.prod(x.shape) for x in jax.tree.leaves(params)) == 2_837_314


def test_evaluate_metrics_and_adam_reduces_the_loss(tiny):
    params, state = tiny.init(jax.random.key(0))
    before = tiny.evaluate(params, state, "validation", global_batch_size=128)
    assert set(before) == {"validation/loss", "validation/squared_error", "validation/num_examples"}
    assert before["validation/num_examples"] == 500
    # An untrained decoder outputs about 0.5 everywhere: about 784 log 2 nats per image.
    assert 300 < before["validation/loss"] < 800

    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, batch):
        def mean_loss(p):
            total, (count, _) = tiny.loss(p, state, batch, rng=None, train=True)
            return total / count

        loss, grads = jax.value_and_grad(mean_loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    for batch in itertools.islice(tiny.batches("train", 100, seed=0), 60):
        params, opt, _ = step(params, opt, batch)
    after = tiny.evaluate(params, state, "validation", global_batch_size=128)
    assert after["validation/loss"] < 0.6 * before["validation/loss"]
    assert after["validation/squared_error"] < before["validation/squared_error"]


def test_bad_fields_raise():
    with pytest.raises(ValueError, match="size"):
        MnistAutoencoder(size="huge")
    with pytest.raises(ValueError, match="activation"):
        MnistAutoencoder(activation="gelu")
    with pytest.raises(ValueError, match="split"):
        MnistAutoencoder(size="tiny").batches("dev", 8, seed=0)


def test_config_lists_every_constructor_field():
    path = Path(__file__).resolve().parents[2] / "configs" / "workload" / "mnist_autoencoder.yaml"
    cfg = OmegaConf.load(path).workload  # a global-package file: workload + trainer
    fields = set(inspect.signature(MnistAutoencoder).parameters)
    assert set(cfg) - {"_target_"} == fields
    assert cfg._target_ == "workloads.mnist_autoencoder.MnistAutoencoder"
