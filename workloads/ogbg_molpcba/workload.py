"""The ogbg_molpcba workload: the paper's GNN on molecular graphs (128 binary tasks).

Implements :class:`workloads.base.Workload`. Data come from the offline mini dataset
(``data="mini"``, default, RDKit's NCI molecules) or the real tfds ``ogbg_molpcba``
(``data="tfds"``); both yield the same example format and go through the same batching.
"""

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jraph
import numpy as np
from scipy.special import expit

from workloads.base import default_data_dir
from workloads.ogbg_molpcba import batching, mini_dataset, tfds_source
from workloads.ogbg_molpcba.metrics import masked_bce, mean_average_precision
from workloads.ogbg_molpcba.model import GNN, resolve_size

NUM_TASKS = 128
SPLITS = ("train", "validation", "test")
DATA_KINDS = ("mini", "tfds")


def to_graphs_tuple(batch: dict) -> jraph.GraphsTuple:
    """The graph part of a batch dict (see :mod:`.batching`) as a ``jraph.GraphsTuple``."""
    return jraph.GraphsTuple(
        nodes=batch["nodes"],
        edges=batch["edges"],
        senders=batch["senders"],
        receivers=batch["receivers"],
        n_node=batch["n_node"],
        n_edge=batch["n_edge"],
        globals=None,
    )


class OgbgMolpcba:
    """GNN on ogbg-molpcba, with model size and data source as constructor fields.

    Args:
        size: Model preset, ``"paper"`` (3,554,176 parameters) or ``"tiny"`` (CPU).
        latent_dim: Overrides the preset's embedding width.
        hidden_dims: Overrides the preset's MLP hidden widths.
        num_message_passing_steps: Overrides the preset's number of graph-network blocks.
        dropout_rate: Dropout in every MLP layer during training.
        data: ``"mini"`` (offline, prepared on first use) or ``"tfds"`` (real, prepared
            beforehand with ``python -m workloads.ogbg_molpcba.prepare_tfds``).
        data_dir: Root data directory; ``None``: ``$SKETCHY_DATA_DIR`` or ``~/.cache/sketchy``.
        max_molecules: Mini data only: use the first N NCI molecules (``None``: all 5,000).
        nodes_per_graph: Fixed node budget per graph slot of a padded batch; ``None``: the
            train split's mean + 3 standard deviations of a shard's sum (see
            :class:`batching.Budget`).
        edges_per_graph: Fixed directed-edge budget per graph slot; ``None``: as above.
    """

    name = "ogbg_molpcba"
    # AlgoPerf's targets for this workload.
    targets = {
        "validation/mean_average_precision": 0.28098,
        "test/mean_average_precision": 0.268729,
    }

    def __init__(
        self,
        size: str = "paper",
        latent_dim: int | None = None,
        hidden_dims: Sequence[int] | None = None,
        num_message_passing_steps: int | None = None,
        dropout_rate: float = 0.1,
        data: str = "mini",
        data_dir: str | None = None,
        max_molecules: int | None = None,
        nodes_per_graph: float | None = None,
        edges_per_graph: float | None = None,
    ) -> None:
        if data not in DATA_KINDS:
            raise ValueError(f"Unknown ogbg_molpcba data {data!r}; use one of {DATA_KINDS}.")
        cfg = resolve_size(size, latent_dim, hidden_dims, num_message_passing_steps)
        self.model = GNN(num_outputs=NUM_TASKS, dropout_rate=dropout_rate, **cfg)
        self.data = data
        self.data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
        self.max_molecules = max_molecules
        self.nodes_per_graph = nodes_per_graph
        self.edges_per_graph = edges_per_graph
        self._mini: dict | None = None
        self._sources: dict[str, Any] = {}
        self._size_stats: dict | None = None
        self._eval_step = jax.jit(self._eval_outputs)

    # ---- data ---------------------------------------------------------------------------

    def source(self, split: str) -> Any:
        """Random-access tfds-format examples of ``split`` (loaded once, then cached)."""
        _check_split(split)
        if split not in self._sources:
            if self.data == "mini":
                self._sources[split] = self._mini_data()["splits"][split]
            else:
                self._sources[split] = tfds_source.open_split(self.data_dir, split)
        return self._sources[split]

    def _mini_data(self) -> dict:
        if self._mini is None:
            self._mini = mini_dataset.load(self.data_dir, self.max_molecules)
        return self._mini

    def budget(self, global_batch_size: int, num_shards: int) -> batching.Budget:
        """Static size of each shard's padded sub-batch (from the data's graph sizes)."""
        if global_batch_size <= 0 or num_shards <= 0 or global_batch_size % num_shards:
            raise ValueError(
                f"global_batch_size {global_batch_size} must be a positive multiple of "
                f"num_shards {num_shards}; pick a batch size divisible by the device count."
            )
        if self._size_stats is None:
            stats = batching.graph_size_stats(self.source("train"))
            # The floor (largest graph) covers every split, so that evaluation never meets
            # a graph bigger than an empty sub-batch.
            for split in ("validation", "test"):
                other = batching.graph_size_stats(self.source(split))
                for key in ("max_nodes", "max_edges"):
                    stats[key] = max(stats[key], other[key])
            self._size_stats = stats
        return batching.Budget.for_graphs(
            global_batch_size // num_shards,
            self._size_stats,
            nodes_per_graph=self.nodes_per_graph,
            edges_per_graph=self.edges_per_graph,
        )

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
        budget = self.budget(global_batch_size, num_shards)
        per_shard = global_batch_size // num_shards
        if split == "train":
            return batching.train_batches(
                self.source(split),
                seed=seed,
                graphs_per_shard=per_shard,
                num_shards=num_shards,
                budget=budget,
                start_step=start_step,
            )
        return batching.eval_batches(
            self.source(split), graphs_per_shard=per_shard, num_shards=num_shards, budget=budget
        )

    def fake_batch(self, global_batch_size: int, num_shards: int = 1) -> dict:
        """An all-padding batch with the shapes and dtypes of a training batch."""
        budget = self.budget(global_batch_size, num_shards)
        return batching.concat_shards([batching.pack([], budget)] * num_shards)

    # ---- model --------------------------------------------------------------------------

    def init(self, rng: jax.Array) -> tuple[Any, dict]:
        """Parameters (shapes do not depend on the batch) and an empty model state."""
        graph = batching.to_graph(
            {
                "num_nodes": np.array([2]),
                "node_feat": np.zeros((2, 9), np.float32),
                "edge_feat": np.zeros((1, 3), np.float32),
                "edge_index": np.array([[0, 1]]),
            }
        )
        params = self.model.init({"params": rng}, graph, train=False)["params"]
        return params, {}

    def apply(self, params, model_state, batch, *, rng, train):
        """Logits ``(n_graph, 128)`` of every graph slot (padding included) and the state."""
        rngs = {"dropout": rng} if train and rng is not None else {}
        logits = self.model.apply(
            {"params": params}, to_graphs_tuple(batch), train=train, rngs=rngs
        )
        return logits, model_state

    def loss(self, params, model_state, batch, *, rng, train):
        """``(summed BCE over labelled entries, (their count, model state))``."""
        logits, model_state = self.apply(params, model_state, batch, rng=rng, train=train)
        summed, count = masked_bce(logits, batch["labels"], batch["weights"])
        return summed, (count, model_state)

    # ---- evaluation ---------------------------------------------------------------------

    def _eval_outputs(self, params, batch):
        logits, _ = self.apply(params, {}, batch, rng=None, train=False)
        summed, _ = masked_bce(logits, batch["labels"], batch["weights"])
        return logits, summed

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
        """Loss, accuracy and mean average precision over one pass of ``split``.

        ``"train"`` is evaluated on its first ``len(validation)`` examples, as AlgoPerf's
        ``eval_train`` subset.
        """
        _check_split(split)
        limit = len(self.source("validation")) if split == "train" else None
        budget = self.budget(global_batch_size, num_shards)
        logits, labels, weights, loss_sum = [], [], [], 0.0
        for batch in batching.eval_batches(
            self.source(split),
            graphs_per_shard=global_batch_size // num_shards,
            num_shards=num_shards,
            budget=budget,
            limit=limit,
        ):
            batch_logits, summed = self._eval_step(params, put(batch))
            logits.append(np.asarray(jax.device_get(batch_logits)))
            labels.append(batch["labels"])
            weights.append(batch["weights"])
            loss_sum += float(summed)
        logits, labels, weights = (np.concatenate(x) for x in (logits, labels, weights))
        count = weights.sum()
        correct = ((logits > 0) == (labels > 0.5)) * weights
        scores = expit(logits)  # the probabilities OGB ranks (ties matter in AP)
        return {
            f"{split}/loss": float(loss_sum / max(count, 1.0)),
            f"{split}/accuracy": float(correct.sum() / max(count, 1.0)),
            f"{split}/mean_average_precision": mean_average_precision(scores, labels, weights),
        }


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown ogbg_molpcba split {split!r}; use one of {SPLITS}.")
