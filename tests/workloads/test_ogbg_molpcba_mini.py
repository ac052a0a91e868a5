"""The offline mini ogbg_molpcba: format, labels, split, caching."""

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from workloads.ogbg_molpcba import mini_dataset, mini_labels

MOLECULES = 300


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.getbasetemp() / "ogbg_molpcba_data"  # shared by test files
    mini_dataset.prepare(data_dir, MOLECULES, progress=False)
    return data_dir


@pytest.fixture(scope="module")
def mini(data_dir):
    return mini_dataset.load(data_dir, MOLECULES, progress=False)


def test_examples_have_the_tfds_ogbg_molpcba_format(mini):
    for split in mini_dataset.SPLITS:
        source = mini["splits"][split]
        for i in range(len(source)):
            ex = source[i]
            n, e = int(ex["num_nodes"][0]), int(ex["num_edges"][0])
            assert ex["node_feat"].shape == (n, 9) and ex["node_feat"].dtype == np.float32
            assert ex["edge_feat"].shape == (e, 3) and ex["edge_feat"].dtype == np.float32
            assert ex["edge_index"].shape == (e, 2) and ex["edge_index"].dtype == np.int64
            assert ex["labels"].shape == (128,) and ex["labels"].dtype == np.float32
            assert ex["edge_index"].min(initial=0) >= 0 and ex["edge_index"].max(initial=0) < n
            # Each bond once (tfds stores one direction; batching adds the other).
            bonds = {tuple(sorted(pair)) for pair in ex["edge_index"].tolist()}
            assert len(bonds) == e


def test_graphs_match_rdkit_molecules(mini):
    for i in range(0, len(mini["smiles"]), 37):
        mol = Chem.MolFromSmiles(str(mini["smiles"][i]))
        split = mini_dataset.SPLITS[mini["split"][i]]
        position = int(np.sum(mini["split"][:i] == mini["split"][i]))
        ex = mini["splits"][split][position]
        assert int(ex["num_nodes"][0]) == mol.GetNumAtoms()
        assert int(ex["num_edges"][0]) == mol.GetNumBonds()
        atomic_numbers = [a.GetAtomicNum() - 1 for a in mol.GetAtoms()]  # OGB feature 0
        assert ex["node_feat"][:, 0].tolist() == atomic_numbers


def test_labels_are_128_molpcba_like_tasks_with_missing_entries(mini):
    labels = mini["labels"]
    labelled = ~np.isnan(labels)
    assert labels.shape[1] == 128 == len(mini["task_names"]) == len(set(mini["task_names"]))
    assert set(np.unique(labels[labelled])) == {0.0, 1.0}
    rates = np.nansum(labels, axis=0) / labelled.sum(axis=0)
    assert rates.min() >= mini_labels.MIN_RATE and rates.max() <= mini_labels.MAX_RATE
    missing = 1 - labelled.mean(axis=0)
    assert 0.05 < 1 - labelled.mean() < 0.5 and (missing > 0).all()
    assert set(mini["task_sources"]) == {"filter", "fragment", "descriptor"}
    # No task duplicates another.
    columns = {labels[:, j].tobytes() for j in range(128)}
    assert len(columns) == 128


def test_scaffold_split_is_80_10_10_and_disjoint_by_scaffold(mini):
    split = mini["split"]
    fractions = np.bincount(split, minlength=3) / len(split)
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.03)
    scaffolds = [
        MurckoScaffold.MurckoScaffoldSmiles(smiles=str(s), includeChirality=True)
        for s in mini["smiles"]
    ]
    train = {s for s, k in zip(scaffolds, split, strict=True) if k == 0}
    held_out = {s for s, k in zip(scaffolds, split, strict=True) if k > 0}
    assert not train & held_out


def test_preparation_is_deterministic_and_cached(data_dir, mini):
    path = mini_dataset.cache_path(data_dir, MOLECULES)
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    assert mini_dataset.prepare(data_dir, MOLECULES) == path and path.stat().st_mtime_ns == stamp
    rebuilt = mini_dataset.build(MOLECULES, progress=False)
    np.testing.assert_array_equal(rebuilt["labels"], mini["labels"])
    np.testing.assert_array_equal(rebuilt["split"], mini["split"])


def test_interrupted_preparation_leaves_nothing_behind(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mini_dataset.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mini_dataset.prepare(tmp_path, 200, progress=False)
    folder = mini_dataset.cache_path(tmp_path, 200).parent
    assert list(folder.iterdir()) == []


def test_too_few_molecules_is_a_clear_error():
    with pytest.raises(ValueError, match="use more molecules"):
        mini_dataset.build(10, progress=False)
