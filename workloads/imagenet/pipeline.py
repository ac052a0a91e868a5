"""Deterministic, resumable image batches with grain: a batch is a function of (seed, step).

Training reads examples in a fresh permutation every epoch (``default_rng([seed, epoch])``)
and draws each example's crop and flip from ``default_rng([seed, position])``, where
``position = step * batch + i`` counts examples since the start of training; so batch
``step`` is the same whether a run started at 0 or resumed at ``step``. grain's
``MapDataset`` gives the random access and its thread pool decodes ahead of the trainer.
Evaluation reads a split once, in order, and pads its last batch with zero-weight images.
"""

import functools
from collections.abc import Iterator, Sequence

import grain
import numpy as np

from workloads.imagenet import preprocess


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _stack(examples: Sequence[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _read_options(threads: int, buffer: int) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=max(1, threads), prefetch_buffer_size=max(1, buffer))


def train_batches(
    source: Sequence[dict],
    *,
    seed: int,
    batch_size: int,
    start_step: int,
    image_size: int,
    min_area: float,
    random_flip: bool,
    threads: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite batches ``{"images": uint8 [B,S,S,3], "labels": int32 [B], "weights": [B]}``."""
    n = len(source)

    def example(position: int) -> dict[str, np.ndarray]:
        epoch, offset = divmod(position, n)
        record = source[int(epoch_permutation(seed, epoch, n)[offset])]
        rng = np.random.default_rng([seed, position])
        image = preprocess.train_image(record["image"], rng, image_size, min_area, random_flip)
        return {
            "images": image,
            "labels": np.int32(record["label"]),
            "weights": np.float32(1.0),
        }

    ds = grain.MapDataset.range(start_step * batch_size, 2**62).map(example)
    it = ds.to_iter_dataset(_read_options(threads, 2 * batch_size))
    return iter(it.batch(batch_size, drop_remainder=True, batch_fn=_stack))


def eval_batches(
    source: Sequence[dict],
    *,
    batch_size: int,
    image_size: int,
    threads: int,
    limit: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One ordered pass over ``source`` (its first ``limit`` examples); the last batch is
    padded with zero images of weight 0."""
    n = len(source) if limit is None else min(limit, len(source))
    padded = -(-n // batch_size) * batch_size

    def example(i: int) -> dict[str, np.ndarray]:
        if i >= n:
            return padding_example(image_size)
        record = source[i]
        return {
            "images": preprocess.eval_image(record["image"], image_size),
            "labels": np.int32(record["label"]),
            "weights": np.float32(1.0),
        }

    ds = grain.MapDataset.range(padded).map(example)
    it = ds.to_iter_dataset(_read_options(threads, 2 * batch_size))
    return iter(it.batch(batch_size, drop_remainder=True, batch_fn=_stack))


def padding_example(image_size: int) -> dict[str, np.ndarray]:
    return {
        "images": np.zeros((image_size, image_size, 3), np.uint8),
        "labels": np.int32(0),
        "weights": np.float32(0.0),
    }


def padding_batch(batch_size: int, image_size: int) -> dict[str, np.ndarray]:
    return _stack([padding_example(image_size)] * batch_size)
