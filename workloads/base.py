"""The interface every workload implements (the trainer relies on nothing else).

A workload is one object; size presets (``paper``, ``algoperf``, ``tiny``) are constructor
fields set from YAML, never subclasses. Batches are dicts of NumPy arrays (or pytrees of
them) whose every leaf has a leading dimension divisible by ``num_shards``: the trainer
shards axis 0 of each leaf over the mesh's ``data`` axis, so each shard must be
self-contained (e.g. a graph batch is ``num_shards`` padded sub-batches concatenated).
Shapes are static across steps (no recompilation).
"""

import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax

Batch = Any  # pytree of np.ndarray
Params = Any
ModelState = Any  # e.g. BatchNorm statistics; {} when the model has none


class Workload(Protocol):
    name: str
    # Target metric values (paper / AlgoPerf), keyed like the metrics: "validation/<metric>".
    targets: dict[str, float]

    def init(self, rng: jax.Array) -> tuple[Params, ModelState]:
        """Fresh parameters and model state (works under ``jax.eval_shape``)."""

    def apply(
        self, params: Params, model_state: ModelState, batch: Batch, *, rng: jax.Array, train: bool
    ) -> tuple[Any, ModelState]:
        """Model outputs (e.g. logits) and the updated model state."""

    def loss(
        self, params: Params, model_state: ModelState, batch: Batch, *, rng: jax.Array, train: bool
    ) -> tuple[jax.Array, tuple[jax.Array, ModelState]]:
        """``(summed loss, (count, new model state))``; the trainer minimizes sum / count.

        Padding examples carry weight 0 and do not count.
        """

    def batches(
        self,
        split: str,
        global_batch_size: int,
        *,
        seed: int,
        num_shards: int = 1,
        start_step: int = 0,
    ) -> Iterator[Batch]:
        """Batches of ``split``. ``"train"``: infinite, shuffled deterministically from
        ``seed``, beginning at batch ``start_step`` (exact resume). Other splits: one pass,
        last batch padded with zero-weight examples."""

    def evaluate(
        self,
        params: Params,
        model_state: ModelState,
        split: str,
        *,
        global_batch_size: int,
        num_shards: int = 1,
        put: Callable[[Batch], Batch] = lambda b: b,
    ) -> dict[str, float]:
        """Metrics on ``split`` as ``{"<split>/<metric>": value}``; ``put`` places a host
        batch on the devices (the trainer passes its sharding)."""

    def fake_batch(self, global_batch_size: int, num_shards: int = 1) -> Batch:
        """A batch with the exact shapes and dtypes of a training batch (for compiling)."""


def decay_mask(params: Params) -> Any:
    """Which parameters weight decay applies to: kernels (2-D or more), not biases or norms.

    The usual convention (flax examples, big_vision, AlgoPerf's ResNet recipe): decaying
    BatchNorm/LayerNorm scales and biases only fights the normalisation. Passed to the
    optimizers as an optax mask (``configs/config.yaml``: ``weight_decay_mask``).
    """
    return jax.tree.map(lambda p: jax.numpy.ndim(p) >= 2, params)


def default_data_dir() -> str:
    """Where every workload keeps its data: ``$SKETCHY_DATA_DIR``, else ``~/.cache/sketchy``."""
    return os.environ.get("SKETCHY_DATA_DIR") or os.path.expanduser("~/.cache/sketchy")
