"""ogbg_molpcba model, loss and metric: parameter count, masking, OGB's mAP."""

import functools
import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from workloads.ogbg_molpcba import OgbgMolpcba, batching
from workloads.ogbg_molpcba.metrics import masked_bce, mean_average_precision
from workloads.ogbg_molpcba.model import resolve_size


def _num_params(workload: OgbgMolpcba) -> int:
    params, _ = jax.eval_shape(workload.init, jax.random.key(0))
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def test_paper_preset_has_the_papers_parameter_count():
    # AlgoPerf / init2winit GNN: 3,554,176 parameters in 66 tensors.
    workload = OgbgMolpcba(size="paper")
    params, state = jax.eval_shape(workload.init, jax.random.key(0))
    assert _num_params(workload) == 3_554_176
    assert len(jax.tree.leaves(params)) == 66
    assert state == {}


def test_tiny_preset_is_small_and_fields_override_the_preset():
    assert _num_params(OgbgMolpcba(size="tiny")) < 200_000
    deeper = OgbgMolpcba(size="tiny", num_message_passing_steps=4, hidden_dims=[32, 32])
    assert deeper.model.num_message_passing_steps == 4
    assert tuple(deeper.model.hidden_dims) == (32, 32)
    assert deeper.model.latent_dim == 64  # untouched preset field


def test_unknown_size_and_data_are_clear_errors():
    with pytest.raises(ValueError, match="size preset 'huge'.*paper"):
        resolve_size("huge")
    with pytest.raises(ValueError, match="data 'csv'"):
        OgbgMolpcba(data="csv")


def test_mean_average_precision_matches_hand_computed_case():
    scores = np.array([[0.9, 0.2, 0.5, 0.3], [0.8, 0.6, 0.4, 0.3], [0.7, 0.1, 0.3, 0.3],
                       [0.1, 0.9, 0.2, 0.3]])  # fmt: skip
    labels = np.array([[1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 1]], np.float32)
    mask = np.ones_like(labels, bool)
    mask[1, 1] = False  # task 1 loses its best-scored negative
    mask[:, 3] = False  # task 3: no labels at all
    # Task 0: positives ranked 1st and 3rd -> AP = (1/1 + 2/3) / 2 = 5/6.
    # Task 1 on rows {0, 2, 3}: ranking 0.9(+), 0.2(+), 0.1(-) -> AP = 1.
    # Task 2: no positive -> skipped; task 3: unlabelled -> skipped.
    expected = (5 / 6 + 1.0) / 2
    assert mean_average_precision(scores, labels, mask) == pytest.approx(expected)
    # Unmasking row 1 of task 1 ranks its negative (0.6) second: AP = (1/1 + 2/3) / 2.
    mask[1, 1] = True
    assert mean_average_precision(scores, labels, mask) == pytest.approx(5 / 6)


def test_mean_average_precision_without_any_valid_task_is_nan():
    labels = np.zeros((3, 2), np.float32)
    assert np.isnan(mean_average_precision(np.ones((3, 2)), labels, np.ones((3, 2))))


def test_masked_entries_and_padding_contribute_nothing_to_the_loss():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(4, 128)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 2, size=(4, 128)), jnp.float32)
    weights = jnp.ones((4, 128)).at[0, :5].set(0.0).at[3].set(0.0)  # NaN labels; padding row
    total, count = masked_bce(logits, labels, weights)
    assert float(count) == 4 * 128 - 5 - 128
    # Changing anything under a zero weight (even to inf) leaves the loss unchanged.
    logits2 = logits.at[3].set(jnp.inf).at[0, :5].set(-50.0)
    labels2 = labels.at[0, :5].set(1.0 - labels[0, :5])
    total2, _ = masked_bce(logits2, labels2, weights)
    assert float(total2) == pytest.approx(float(total), rel=1e-6)
    # ...while a labelled entry does count.
    total3, _ = masked_bce(logits.at[1, 0].add(3.0), labels, weights)
    assert float(total3) != pytest.approx(float(total), rel=1e-6)


def test_workload_loss_ignores_padding_graphs_and_missing_labels():
    workload = OgbgMolpcba(size="tiny", num_message_passing_steps=1, latent_dim=16)
    params, state = jax.jit(workload.init)(jax.random.key(0))
    loss = jax.jit(functools.partial(workload.loss, rng=None, train=False))
    example = {
        "num_nodes": np.array([3]),
        "node_feat": np.arange(27, dtype=np.float32).reshape(3, 9) % 5,
        "num_edges": np.array([2]),
        "edge_feat": np.ones((2, 3), np.float32),
        "edge_index": np.array([[0, 1], [1, 2]]),
        "labels": np.where(np.arange(128) % 3 == 0, np.nan, np.arange(128) % 2).astype(np.float32),
    }
    budget = batching.Budget(n_graph=3, n_node=10, n_edge=12)
    batch = batching.concat_shards([batching.pack([example], budget)])
    total, (count, new_state) = loss(params, state, batch)
    assert float(count) == np.sum(~np.isnan(example["labels"]))
    assert new_state == {}
    # Labels of padding graphs and of missing entries are irrelevant.
    noisy = dict(batch, labels=batch["labels"].copy())
    noisy["labels"][1:] = 1.0
    noisy["labels"][0, ::3] = 1.0
    total2, _ = loss(params, state, noisy)
    assert float(total2) == pytest.approx(float(total), rel=1e-6)


def test_hydra_config_lists_every_constructor_field_and_instantiates():
    path = Path(__file__).parents[2] / "configs" / "workload" / "ogbg_molpcba.yaml"
    cfg = OmegaConf.load(path).workload  # a global-package file: workload + trainer
    fields = set(inspect.signature(OgbgMolpcba).parameters)
    assert set(cfg) - {"_target_"} == fields
    assert cfg.size == "paper" and cfg.data == "mini"
    cfg.hidden_dims = [32]  # YAML lists arrive as ListConfig
    workload = instantiate(cfg)
    assert isinstance(workload, OgbgMolpcba) and tuple(workload.model.hidden_dims) == (32,)
