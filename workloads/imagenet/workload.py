"""The imagenet workload: ResNet-50 image classification, the paper's first workload.

Implements :class:`workloads.base.Workload`. Data: the offline mini dataset (``data="mini"``,
default: real MNIST digits blended into real photographs, 10 classes, JPEG) or the real
tfds ``imagenet2012`` + ``imagenet_v2`` (``data="tfds"``); both are JPEG bytes read by the
same decode/crop code (:mod:`.preprocess`) and the same batching (:mod:`.pipeline`).
Batches are ``{"images": uint8 [B, S, S, 3], "labels": int32 [B], "weights": float32 [B]}``;
the model state is BatchNorm's ``batch_stats``.
"""

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from workloads.base import default_data_dir
from workloads.imagenet import mini_dataset, pipeline, tfds_source
from workloads.imagenet.model import ResNet, resolve_size

SPLITS = ("train", "validation", "test")
DATA_KINDS = ("mini", "tfds")
NUM_CLASSES = {"mini": mini_dataset.NUM_CLASSES, "tfds": 1000}


def cross_entropy(logits, labels, weights, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy (with optional label smoothing) times ``weights``."""
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets) * weights


class Imagenet:
    """ResNet on ImageNet-format data; model size and data source are constructor fields.

    Args:
        size: Model preset, ``"paper"`` (ResNet-50: 25,557,032 parameters at 1,000
            classes) or ``"tiny"`` (stages (1,1,1,1), 16 base filters).
        stage_sizes: Overrides the preset's bottleneck blocks per stage.
        width: Overrides the preset's base filter count.
        num_classes: Classifier width; ``None``: the data's (mini 10, tfds 1,000).
        zero_init_last_bn: Zero-initialise each block's last BatchNorm scale.
        label_smoothing: Label smoothing of the training loss (0 in the paper's base setup).
        image_size: Side of the crops fed to the model (224 at paper scale).
        min_crop_area: Smallest area fraction of the training random-resized crop (0.08).
        random_flip: Random horizontal flips in training.
        data: ``"mini"`` (offline, prepared on first use) or ``"tfds"`` (real, prepared with
            ``python -m workloads.imagenet.prepare_tfds``).
        data_dir: Root data directory; ``None``: ``$SKETCHY_DATA_DIR`` or ``~/.cache/sketchy``.
        data_threads: Threads decoding JPEGs ahead of the trainer.
        max_train_examples: Use only the first N training examples (tests).
    """

    name = "imagenet"
    # AlgoPerf's targets: top-1 accuracy on ImageNet validation and ImageNet-v2 (test).
    targets = {"validation/accuracy": 0.77431, "test/accuracy": 0.6560}

    def __init__(
        self,
        size: str = "paper",
        stage_sizes: Sequence[int] | None = None,
        width: int | None = None,
        num_classes: int | None = None,
        zero_init_last_bn: bool = True,
        label_smoothing: float = 0.0,
        image_size: int = 224,
        min_crop_area: float = 0.08,
        random_flip: bool = True,
        data: str = "mini",
        data_dir: str | None = None,
        data_threads: int = 8,
        max_train_examples: int | None = None,
    ) -> None:
        if data not in DATA_KINDS:
            raise ValueError(f"Unknown imagenet data {data!r}; use one of {DATA_KINDS}.")
        if image_size < 8:
            raise ValueError(
                f"image_size={image_size} is too small; use at least 8 (224 at paper scale)."
            )
        if not 0.0 < min_crop_area <= 1.0:
            raise ValueError(f"min_crop_area={min_crop_area} must be in (0, 1] (ImageNet: 0.08).")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1).")
        self.num_classes = num_classes or NUM_CLASSES[data]
        self.model = ResNet(
            self.num_classes, zero_init_last_bn=zero_init_last_bn,
            **resolve_size(size, stage_sizes, width),
        )  # fmt: skip
        self.label_smoothing = label_smoothing
        self.image_size = image_size
        self.min_crop_area = min_crop_area
        self.random_flip = random_flip
        self.data = data
        self.data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
        self.data_threads = data_threads
        self.max_train_examples = max_train_examples
        self._sources: dict[str, Any] = {}
        self._eval_step = jax.jit(self._eval_sums)

    # ---- data ---------------------------------------------------------------------------

    def source(self, split: str) -> Any:
        """Random-access examples ``{"image": JPEG bytes, "label", "file_name"}`` of ``split``."""
        _check_split(split)
        if split not in self._sources:
            if self.data == "mini":
                self._sources |= mini_dataset.load(self.data_dir)
            else:
                self._sources[split] = tfds_source.open_split(self.data_dir, split)
        return self._sources[split]

    def num_examples(self, split: str) -> int:
        n = len(self.source(split))
        if split == "train" and self.max_train_examples is not None:
            n = min(n, self.max_train_examples)
        return n

    def batches(
        self,
        split: str,
        global_batch_size: int,
        *,
        seed: int,
        num_shards: int = 1,
        start_step: int = 0,
    ) -> Iterator[dict]:
        """Train: infinite, shuffled from ``seed``, from batch ``start_step`` on. Else one pass."""
        _check_batch(global_batch_size, num_shards)
        source = self.source(split)
        if split == "train":
            if self.max_train_examples is not None:
                source = _Prefix(source, self.max_train_examples)
            return pipeline.train_batches(
                source, seed=seed, batch_size=global_batch_size, start_step=start_step,
                image_size=self.image_size, min_area=self.min_crop_area,
                random_flip=self.random_flip, threads=self.data_threads,
            )  # fmt: skip
        return pipeline.eval_batches(
            source, batch_size=global_batch_size, image_size=self.image_size,
            threads=self.data_threads,
        )  # fmt: skip

    def fake_batch(self, global_batch_size: int, num_shards: int = 1) -> dict:
        """An all-padding batch with the shapes and dtypes of a training batch."""
        _check_batch(global_batch_size, num_shards)
        return pipeline.padding_batch(global_batch_size, self.image_size)

    # ---- model --------------------------------------------------------------------------

    def init(self, rng: jax.Array) -> tuple[Any, Any]:
        """Parameters and the BatchNorm statistics (shapes do not depend on the batch)."""
        images = jnp.zeros((1, self.image_size, self.image_size, 3), jnp.uint8)
        variables = self.model.init({"params": rng}, images, train=False)
        return variables["params"], {"batch_stats": variables["batch_stats"]}

    def apply(self, params, model_state, batch, *, rng, train):
        """Logits ``[B, num_classes]``; in training, BatchNorm statistics are updated."""
        variables = {"params": params, **model_state}
        if not train:
            return self.model.apply(variables, batch["images"], train=False), model_state
        logits, updates = self.model.apply(
            variables, batch["images"], train=True, mutable=["batch_stats"]
        )
        return logits, {"batch_stats": updates["batch_stats"]}

    def loss(self, params, model_state, batch, *, rng, train):
        """``(summed cross-entropy over real examples, (their count, model state))``."""
        logits, model_state = self.apply(params, model_state, batch, rng=rng, train=train)
        smoothing = self.label_smoothing if train else 0.0
        losses = cross_entropy(logits, batch["labels"], batch["weights"], smoothing)
        return losses.sum(), (batch["weights"].sum(), model_state)

    # ---- evaluation ---------------------------------------------------------------------

    def _eval_sums(self, params, model_state, batch):
        logits, _ = self.apply(params, model_state, batch, rng=None, train=False)
        weights = batch["weights"]
        correct = (jnp.argmax(logits, -1) == batch["labels"]) * weights
        loss = cross_entropy(logits, batch["labels"], weights).sum()
        return loss, correct.sum(), weights.sum()

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
        """Loss, top-1 accuracy and top-1 error over one pass of ``split``.

        ``"train"`` is evaluated on its first ``len(validation)`` examples with the eval crop,
        as AlgoPerf's ``eval_train``.
        """
        _check_split(split)
        _check_batch(global_batch_size, num_shards)
        source = self.source(split)
        limit = len(self.source("validation")) if split == "train" else None
        sums = np.zeros(3)
        for batch in pipeline.eval_batches(
            source, batch_size=global_batch_size, image_size=self.image_size,
            threads=self.data_threads, limit=limit,
        ):  # fmt: skip
            sums += np.array(jax.device_get(self._eval_step(params, model_state, put(batch))))
        loss, correct, count = sums
        accuracy = correct / max(count, 1.0)
        return {
            f"{split}/loss": float(loss / max(count, 1.0)),
            f"{split}/accuracy": float(accuracy),
            f"{split}/error": float(1.0 - accuracy),
        }


class _Prefix:
    """The first ``n`` examples of a random-access source."""

    def __init__(self, source, n: int):
        self._source, self._n = source, min(n, len(source))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int):
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._source[i]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown imagenet split {split!r}; use one of {SPLITS}.")


def _check_batch(global_batch_size: int, num_shards: int) -> None:
    if global_batch_size <= 0 or num_shards <= 0 or global_batch_size % num_shards:
        raise ValueError(
            f"global_batch_size {global_batch_size} must be a positive multiple of "
            f"num_shards {num_shards}; pick a batch size divisible by the device count."
        )
