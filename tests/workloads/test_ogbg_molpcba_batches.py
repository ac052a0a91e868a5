"""ogbg_molpcba batches: static shapes, self-contained shards, exact resume, full eval pass."""

import itertools

import numpy as np
import pytest

from workloads.ogbg_molpcba import OgbgMolpcba, mini_dataset

MOLECULES = 300  # a quick subset of the mini dataset (about 2 s to prepare)


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    data_dir = tmp_path_factory.getbasetemp() / "ogbg_molpcba_data"  # shared by test files
    mini_dataset.prepare(data_dir, MOLECULES, progress=False)
    return OgbgMolpcba(size="tiny", data_dir=str(data_dir), max_molecules=MOLECULES)


def _shards(batch, num_shards):
    return [{k: np.split(v, num_shards)[s] for k, v in batch.items()} for s in range(num_shards)]


@pytest.mark.parametrize("num_shards", [1, 4])
def test_train_batches_have_static_shapes_and_self_contained_shards(workload, num_shards):
    batches = list(
        itertools.islice(workload.batches("train", 32, seed=0, num_shards=num_shards), 12)
    )
    fake = workload.fake_batch(32, num_shards)
    budget = workload.budget(32, num_shards)
    for batch in batches:
        assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
            k: (v.shape, v.dtype) for k, v in fake.items()
        }
        assert all(v.shape[0] % num_shards == 0 for v in batch.values())
        assert int(batch["graph_mask"].sum()) > 0.9 * 32  # few graphs dropped for room
        for s, shard in enumerate(_shards(batch, num_shards)):
            # Each shard is a complete padded graph batch over its own block of nodes.
            first, last = s * budget.n_node, (s + 1) * budget.n_node
            assert shard["n_node"].sum() == budget.n_node
            assert shard["n_edge"].sum() == budget.n_edge
            for key in ("senders", "receivers"):
                assert shard[key].min() >= first and shard[key].max() < last
            # Edges stay within their graph.
            graph_of_node = np.repeat(np.arange(len(shard["n_node"])), shard["n_node"])
            graph_of_edge = np.repeat(np.arange(len(shard["n_edge"])), shard["n_edge"])
            assert np.array_equal(graph_of_node[shard["senders"] - first], graph_of_edge)
            assert np.array_equal(graph_of_node[shard["receivers"] - first], graph_of_edge)
            # Padding graphs carry no weight.
            assert not shard["weights"][shard["graph_mask"] == 0].any()


def _equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_train_batches_are_deterministic_and_resume_exactly(workload):
    # 300 molecules -> ~240 train graphs -> 7 steps of 32 per epoch: cover an epoch boundary.
    run = list(itertools.islice(workload.batches("train", 32, seed=3, num_shards=2), 10))
    again = list(itertools.islice(workload.batches("train", 32, seed=3, num_shards=2), 10))
    resumed = list(itertools.islice(workload.batches("train", 32, seed=3, num_shards=2,
                                                     start_step=6), 4))  # fmt: skip
    other_seed = next(workload.batches("train", 32, seed=4, num_shards=2))
    assert all(_equal(a, b) for a, b in zip(run, again, strict=True))
    assert all(_equal(a, b) for a, b in zip(run[6:], resumed, strict=True))
    assert not _equal(run[0], other_seed)
    assert not _equal(run[0], run[7])  # the next epoch is reshuffled, not repeated


def test_an_epoch_visits_each_training_graph_at_most_once(workload):
    source = workload.source("train")
    steps = len(source) // 32
    seen = []
    for batch in itertools.islice(workload.batches("train", 32, seed=0), steps):
        real = batch["graph_mask"] > 0
        seen += [tuple(row) for row in batch["labels"][real]]  # label rows as fingerprints
    assert len(seen) >= 0.9 * steps * 32
    everything = [tuple(np.nan_to_num(source[i]["labels"])) for i in range(len(source))]
    for row in set(seen):
        assert seen.count(row) <= everything.count(row)


@pytest.mark.parametrize("split,num_shards,batch_size", [("validation", 1, 8), ("test", 4, 8)])
def test_eval_batches_cover_every_example_once_in_order(workload, split, num_shards, batch_size):
    source = workload.source(split)
    batches = list(workload.batches(split, batch_size, seed=0, num_shards=num_shards))
    shapes = {tuple(v.shape for v in b.values()) for b in batches}
    assert len(shapes) == 1  # static shapes, the last batch padded
    n_node = np.concatenate([b["n_node"][b["graph_mask"] > 0] for b in batches])
    labels = np.concatenate([b["labels"][b["graph_mask"] > 0] for b in batches])
    weights = np.concatenate([b["weights"][b["graph_mask"] > 0] for b in batches])
    expected = [source[i] for i in range(len(source))]
    assert np.array_equal(n_node, [int(ex["num_nodes"][0]) for ex in expected])
    assert np.array_equal(weights, [~np.isnan(ex["labels"]) for ex in expected])
    assert np.array_equal(labels, [np.nan_to_num(ex["labels"]) for ex in expected])


def test_bad_arguments_are_clear_errors(workload):
    with pytest.raises(ValueError, match="multiple of num_shards"):
        workload.batches("train", 30, seed=0, num_shards=4)
    with pytest.raises(ValueError, match="Unknown ogbg_molpcba split 'valid'"):
        workload.batches("valid", 32, seed=0)
    with pytest.raises(ValueError, match="smaller global_batch_size"):
        next(workload.batches("train", 4096, seed=0))
