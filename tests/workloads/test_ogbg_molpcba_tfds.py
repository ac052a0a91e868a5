"""The real-data path of ogbg_molpcba: tfds.data_source (mocked and prepared), clear errors."""

import itertools
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from workloads.ogbg_molpcba import OgbgMolpcba, mini_dataset, prepare_tfds

MOLECULES = 300


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    data_dir = tmp_path_factory.getbasetemp() / "ogbg_molpcba_data"  # shared by test files
    return mini_dataset.load(data_dir, MOLECULES, progress=False)


def _examples(mini, split):
    source = mini["splits"][split]
    return [source[i] for i in range(len(source))]


def _key(example):
    """An example's identity, independent of the order tfds stores examples in."""
    return (example["node_feat"].tobytes(), np.asarray(example["edge_index"]).tobytes())


def test_mocked_tfds_data_source_feeds_the_same_pipeline(mini, tmp_path):
    # tfds's default mock graphs are inconsistent (edge indices vs node counts), so the mock
    # serves valid graphs: the mini dataset's, which have the tfds ogbg_molpcba format.
    served = []

    def as_data_source(builder, split, **kwargs):
        served.append((builder.name, split))
        return _examples(mini, split)

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        workload = OgbgMolpcba(size="tiny", data="tfds", data_dir=str(tmp_path))
        train = list(itertools.islice(workload.batches("train", 16, seed=0, num_shards=2), 3))
        val = list(workload.batches("validation", 16, seed=0, num_shards=2))
    assert ("ogbg_molpcba", "train") in served and ("ogbg_molpcba", "validation") in served
    assert len({tuple(v.shape for v in b.values()) for b in train}) == 1
    n_real = sum(int(b["graph_mask"].sum()) for b in val)
    assert n_real == len(mini["splits"]["validation"])


def _write_ogb_csv(mini, root: Path) -> None:
    """The mini dataset in OGB's raw pcba layout (what pcba.zip holds), for tfds's builder."""
    raw, split_dir = root / "pcba" / "raw", root / "pcba" / "split" / "scaffold"
    raw.mkdir(parents=True)
    split_dir.mkdir(parents=True)
    examples, start = [], 0
    for split, ogb_name in (("train", "train"), ("validation", "valid"), ("test", "test")):
        part = _examples(mini, split)
        examples += part
        np.savetxt(split_dir / f"{ogb_name}.csv.gz", np.arange(start, start + len(part)), "%d")
        start += len(part)
    columns = {
        "edge.csv.gz": (np.concatenate([e["edge_index"] for e in examples]), "%d"),
        "num-node-list.csv.gz": (np.array([e["num_nodes"][0] for e in examples]), "%d"),
        "num-edge-list.csv.gz": (np.array([e["num_edges"][0] for e in examples]), "%d"),
        "node-feat.csv.gz": (np.concatenate([e["node_feat"] for e in examples]), "%d"),
        "edge-feat.csv.gz": (np.concatenate([e["edge_feat"] for e in examples]), "%d"),
        "graph-label.csv.gz": (np.stack([e["labels"] for e in examples]), "%g"),
    }
    for name, (values, fmt) in columns.items():
        np.savetxt(raw / name, values, fmt=fmt, delimiter=",")


def test_prepare_cli_writes_array_records_that_are_read_without_mocks(mini, tmp_path, monkeypatch):
    pytest.importorskip("importlib_resources", reason="tfds download_and_prepare needs it")
    # A pcba.zip made from the mini data stands in for OGB's (the download needs network).
    _write_ogb_csv(mini, tmp_path / "src")
    pcba_zip = tmp_path / "pcba.zip"
    with zipfile.ZipFile(pcba_zip, "w") as archive:
        for path in sorted((tmp_path / "src").rglob("*.csv.gz")):
            archive.write(path, path.relative_to(tmp_path / "src"))
    monkeypatch.setattr(prepare_tfds, "PCBA_SHA256", prepare_tfds._sha256(pcba_zip))
    argv = ["prepare_tfds", "--data_dir", str(tmp_path / "data"), "--pcba_zip", str(pcba_zip)]
    monkeypatch.setattr(sys, "argv", argv)
    prepare_tfds.main()

    workload = OgbgMolpcba(size="tiny", data="tfds", data_dir=str(tmp_path / "data"))
    for split in ("train", "validation", "test"):
        source = workload.source(split)
        expected = {_key(ex): ex for ex in _examples(mini, split)}
        assert len(source) == len(expected)
        for i in range(len(source)):
            got = source[i]
            want = expected[_key(got)]
            for field in want:
                np.testing.assert_array_equal(np.asarray(got[field]), want[field])
    batch = next(workload.batches("train", 16, seed=0))
    assert batch["graph_mask"].sum() > 0


def test_missing_real_data_is_one_clear_error(tmp_path):
    workload = OgbgMolpcba(size="tiny", data="tfds", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        next(workload.batches("train", 16, seed=0))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "ogbg_molpcba" / "0.1.3") in message
    assert "dataset_info.json" in message and "ogbg_molpcba-train.array_record-*" in message
    assert f"python -m workloads.ogbg_molpcba.prepare_tfds --data_dir {tmp_path}" in message


def test_data_prepared_in_another_format_names_only_the_missing_files(tmp_path):
    variant = tmp_path / "ogbg_molpcba" / "0.1.3"
    variant.mkdir(parents=True)
    for name in ("dataset_info.json", "features.json", "ogbg_molpcba-test.tfrecord-00000-of-00001"):
        (variant / name).write_text("{}")
    with pytest.raises(
        FileNotFoundError, match=r"lacks ogbg_molpcba-test\.array_record-\*-of-\*\."
    ):
        OgbgMolpcba(data="tfds", data_dir=str(tmp_path)).source("test")


def test_prepare_rejects_a_corrupt_pcba_zip(tmp_path):
    bad = tmp_path / "pcba.zip"
    bad.write_bytes(b"not the OGB archive")
    with pytest.raises(ValueError, match="wrong sha256"):
        prepare_tfds.fetch_pcba(tmp_path / "downloads", bad)
