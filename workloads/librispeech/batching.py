"""Static-shape batches of utterances, built with grain.

A source is any random-access sequence whose items are ``(samples, token_ids)``. Batches are
dicts of NumPy arrays, every leaf with the batch as axis 0 (each example stands alone, so
the trainer can shard axis 0 anywhere):

- ``audio``: ``(batch, max_samples)`` int16-scale samples (int16), zero-padded;
- ``audio_len``: ``(batch,)`` int32 valid samples;
- ``targets``: ``(batch, max_targets)`` int32 token ids, zero-padded;
- ``target_len``: ``(batch,)`` int32 valid tokens;
- ``weights``: ``(batch,)`` float32, 1 for real utterances, 0 for padding rows.

An utterance longer than ``max_samples``, with more than ``max_targets`` tokens, or too
short for CTC to emit its tokens becomes a zero-weight row (AlgoPerf drops such
utterances when preprocessing; i2w filters them in tf.data). Zero-weighting keeps the
training stream a pure function of ``(seed, step)``: exact resume without replaying.

Training order: grain's ``MapDataset`` shuffles with ``seed``, reshuffles each epoch and
batches across epoch boundaries; batch ``k`` is random access, so a resumed run starts at
``start_step`` directly. With ``num_threads > 0`` grain reads batches on that many threads
ahead of the trainer (for the real data's files).
"""

import dataclasses
import functools
from collections.abc import Iterator, Sequence

import grain
import numpy as np

from workloads.librispeech import frontend


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Static per-utterance sizes of a batch."""

    max_samples: int
    max_targets: int

    @property
    def encoder_frames(self) -> int:
        return ctc_frames(self.max_samples, self.max_samples)


def ctc_frames(num_samples: int, max_samples: int) -> int:
    """Valid encoder frames (after 4x subsampling) of an utterance of ``num_samples``."""
    ceil_div = lambda a, b: (a + b - 1) // b  # noqa: E731
    # A frame is valid when it starts inside the utterance; each stride-2 stage keeps every
    # other frame.
    frames = min(frontend.num_frames(max_samples), ceil_div(num_samples, frontend.FRAME_STEP))
    return ceil_div(ceil_div(frames, 2), 2)


def fits(samples: int, ids: np.ndarray, shapes: Shapes) -> bool:
    """Whether an utterance fits the static shapes and CTC can align its tokens."""
    if samples > shapes.max_samples or not 0 < len(ids) <= shapes.max_targets:
        return False
    repeats = int(np.sum(ids[1:] == ids[:-1]))  # CTC needs a blank between repeats
    return len(ids) + repeats <= ctc_frames(samples, shapes.max_samples)


def collate(examples: Sequence, batch_size: int, shapes: Shapes) -> dict[str, np.ndarray]:
    """Pads ``examples`` (``(samples, ids)`` pairs, or ``None`` for padding) to a batch."""
    batch = {
        "audio": np.zeros((batch_size, shapes.max_samples), np.int16),
        "audio_len": np.zeros((batch_size,), np.int32),
        "targets": np.zeros((batch_size, shapes.max_targets), np.int32),
        "target_len": np.zeros((batch_size,), np.int32),
        "weights": np.zeros((batch_size,), np.float32),
    }
    for row, example in enumerate(examples):
        if example is None:
            continue
        samples, ids = np.asarray(example[0]), np.asarray(example[1], np.int32)
        if not fits(len(samples), ids, shapes):
            continue
        batch["audio"][row, : len(samples)] = samples
        batch["audio_len"][row] = len(samples)
        batch["targets"][row, : len(ids)] = ids
        batch["target_len"][row] = len(ids)
        batch["weights"][row] = 1.0
    return batch


def _check(batch_size: int, num_shards: int) -> None:
    if batch_size <= 0 or num_shards <= 0 or batch_size % num_shards:
        raise ValueError(
            f"global_batch_size {batch_size} must be a positive multiple of num_shards "
            f"{num_shards}; pick a batch size divisible by the device count."
        )


def _iterate(ds: grain.MapDataset, num_threads: int) -> Iterator[dict]:
    if num_threads > 0:
        options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
        return iter(ds.to_iter_dataset(options))
    # Not iter(ds): that would read through grain's default thread pool.
    return (ds[i] for i in range(len(ds)))


def train_batches(
    source: Sequence,
    batch_size: int,
    *,
    seed: int,
    shapes: Shapes,
    num_shards: int = 1,
    start_step: int = 0,
    num_threads: int = 0,
) -> Iterator[dict]:
    """Infinite shuffled batches; batch ``k`` depends only on ``(seed, k)``."""
    _check(batch_size, num_shards)
    if len(source) == 0:
        raise ValueError("the training split is empty")
    collate_fn = functools.partial(collate, batch_size=batch_size, shapes=shapes)
    ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
    ds = ds.batch(batch_size, drop_remainder=True, batch_fn=collate_fn)
    return _iterate(ds[start_step:], num_threads)


def eval_batches(
    source: Sequence,
    batch_size: int,
    *,
    shapes: Shapes,
    num_shards: int = 1,
    limit: int | None = None,
    num_threads: int = 0,
) -> Iterator[dict]:
    """One pass over the first ``limit`` (default: all) utterances, in order; the last batch
    is filled with zero-weight rows."""
    _check(batch_size, num_shards)
    collate_fn = functools.partial(collate, batch_size=batch_size, shapes=shapes)
    ds = grain.MapDataset.source(source)
    if limit is not None:
        ds = ds[:limit]
    return _iterate(ds.batch(batch_size, batch_fn=collate_fn), num_threads)


class Tokenized:
    """A source of ``{"audio", "text"}`` items seen as ``(samples, token ids)`` pairs."""

    def __init__(self, source: Sequence, encode) -> None:
        self._source, self._encode = source, encode

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        item = self._source[i]
        text = item["text"]
        text = text.decode() if isinstance(text, bytes) else str(text)
        return np.asarray(item["audio"]), np.asarray(self._encode(text), np.int32)
