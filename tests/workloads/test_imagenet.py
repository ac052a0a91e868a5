"""imagenet: ResNet-50 size, the JPEG crops, the mini dataset and the real tfds path."""

import io
import itertools
import tarfile

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from workloads.imagenet import Imagenet, mini_dataset, prepare_tfds, preprocess, tfds_source
from workloads.imagenet.model import ResNet, resolve_size


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.getbasetemp() / "imagenet_data"  # shared by test files
    mini_dataset.prepare(data_dir, progress=False)
    return data_dir


def _param_count(model, image_size=32):
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), np.uint8)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
    return count(shapes["params"]), count(shapes["batch_stats"])


def test_paper_preset_is_resnet50():
    params, stats = _param_count(ResNet(1000, **resolve_size("paper")), image_size=224)
    assert params == 25_557_032
    assert stats == 53_120  # BN mean + variance of every channel
    tiny, _ = _param_count(ResNet(10, **resolve_size("tiny")))
    assert tiny < 600_000
    with pytest.raises(ValueError, match="use one of"):
        resolve_size("huge")


def _jpeg(width, height, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8).squeeze()
    out = io.BytesIO()
    Image.fromarray(pixels, mode).save(out, format="JPEG")
    return out.getvalue()


def test_crops_have_the_requested_size_and_follow_the_rng():
    jpeg = _jpeg(61, 37)
    a = preprocess.train_image(jpeg, np.random.default_rng(1), 24)
    b = preprocess.train_image(jpeg, np.random.default_rng(1), 24)
    c = preprocess.train_image(jpeg, np.random.default_rng(2), 24)
    assert a.shape == (24, 24, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    grey = preprocess.eval_image(_jpeg(40, 50, mode="L"), 16)
    assert grey.shape == (16, 16, 3)


def test_crop_boxes_respect_area_and_aspect():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = preprocess.random_crop_box(300, 200, rng, min_area=0.3)
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 300 and 0 <= top < bottom <= 200
        if (w, h) != (175, 175):  # the fallback central crop
            assert 0.3 * 60000 * 0.97 <= w * h <= 60000 * 1.03
            assert 0.74 <= w / h <= 1.35
    assert preprocess.center_crop_box(300, 200, 0.875) == (62, 12, 237, 187)


def test_eval_crop_of_a_centred_square_is_that_square():
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[4:60, 4:60] = 255  # the central 56 = 0.875 * 64 pixels
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    image = preprocess.eval_image(out.getvalue(), 28)
    assert image.min() >= 250


def test_mini_dataset_splits_labels_and_determinism(data_dir, tmp_path):
    splits = mini_dataset.load(data_dir, progress=False)
    assert {s: len(v) for s, v in splits.items()} == {"train": 4000, "validation": 500, "test": 500}
    for split in splits.values():
        assert np.bincount(split.labels).tolist() == [len(split) // 10] * 10
    names = [set(s[i]["file_name"] for i in range(len(s))) for s in splits.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    example = splits["train"][0]
    image = Image.open(io.BytesIO(example["image"]))
    assert image.format == "JPEG" and image.size == (36, 36) and image.mode == "RGB"
    # Determinism: a second build writes byte-identical files.
    rebuilt = mini_dataset.prepare(tmp_path, progress=False)
    for s in mini_dataset.SPLITS:
        a, b = np.load(rebuilt / f"{s}.npz"), np.load(mini_dataset.cache_dir(data_dir) / f"{s}.npz")
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_mini_cache_corruption_is_one_clear_error(tmp_path):
    folder = mini_dataset.cache_dir(tmp_path)
    folder.mkdir(parents=True)
    for s in mini_dataset.SPLITS:
        (folder / f"{s}.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt.*delete that folder"):
        mini_dataset.load(tmp_path, progress=False)


def test_train_batches_are_a_function_of_seed_and_step(data_dir):
    workload = Imagenet(size="tiny", image_size=16, data_dir=str(data_dir), data_threads=2)
    run = list(itertools.islice(workload.batches("train", 8, seed=3, num_shards=2), 4))
    resumed = next(workload.batches("train", 8, seed=3, num_shards=2, start_step=3))
    other = next(workload.batches("train", 8, seed=4, num_shards=2))
    for key in ("images", "labels"):
        np.testing.assert_array_equal(run[3][key], resumed[key])
    assert not np.array_equal(run[0]["images"], other["images"])
    assert run[0]["images"].shape == (8, 16, 16, 3) and run[0]["images"].dtype == np.uint8
    assert run[0]["labels"].dtype == np.int32 and run[0]["weights"].tolist() == [1.0] * 8
    # One epoch visits every training image once.
    labels = np.concatenate(
        [b["labels"] for b in itertools.islice(workload.batches("train", 500, seed=0), 8)]
    )
    assert np.bincount(labels).tolist() == [400] * 10


def _served_examples(n, seed, labels=1000):
    rng = np.random.default_rng(seed)
    return [
        {
            "image": _jpeg(int(rng.integers(20, 90)), int(rng.integers(20, 90)), seed + i),
            "label": int(rng.integers(labels)),
            "file_name": f"img_{i}.JPEG".encode(),
        }
        for i in range(n)
    ]


def test_mocked_tfds_feeds_the_same_decode_and_crop_code(tmp_path):
    # tfds's own mock generator encodes images with TensorFlow (not installed); the mock
    # serves random-size JPEG bytes in imagenet2012's format instead, as SkipDecoding would.
    served = []
    sizes = {"train": 40, "validation": 23, "test": 11}

    def as_data_source(builder, split, decoders=None, **kwargs):
        served.append((builder.name, split, type(decoders["image"]).__name__))
        return _served_examples(sizes[split], seed=len(served))

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        workload = Imagenet(size="tiny", data="tfds", image_size=24, data_dir=str(tmp_path))
        assert workload.num_classes == 1000
        train = next(workload.batches("train", 16, seed=0, num_shards=2))
        test = list(workload.batches("test", 8, seed=0))
    assert ("imagenet2012", "train", "SkipDecoding") in served
    assert ("imagenet_v2", "test", "SkipDecoding") in served
    assert train["images"].shape == (16, 24, 24, 3) and train["images"].dtype == np.uint8
    assert train["labels"].max() < 1000
    assert len(test) == 2 and sum(b["weights"].sum() for b in test) == 11
    assert test[-1]["weights"].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


def test_missing_manual_download_is_one_line(tmp_path):
    workload = Imagenet(size="tiny", data="tfds", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        workload.batches("train", 8, seed=0)
    message = str(err.value)
    assert "\n" not in message
    assert "ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar are missing" in message
    assert str(tmp_path / "downloads" / "manual") in message
    assert "python -m workloads.imagenet.prepare_tfds" in message


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_prepare_from_manual_tars_then_train_on_it(tmp_path):
    """tfds's real imagenet2012 builder (TF-free) on tiny tars in ImageNet's layout."""
    manual = tfds_source.manual_dir(tmp_path)
    manual.mkdir(parents=True)
    with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as outer:
        for synset in ("n01440764", "n01443537"):  # classes 0 and 1 of labels.txt
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as t:
                for i in range(3):
                    _add(t, f"{synset}_{i}.JPEG", _jpeg(40, 30, i))
            _add(outer, f"{synset}.tar", inner.getvalue())
    with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as t:
        for i in range(1, 5):
            _add(t, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(33, 47, 100 + i))
    prepare_tfds.prepare_imagenet2012(tmp_path)
    assert tfds_source.is_prepared(tmp_path, "train")
    workload = Imagenet(size="tiny", data="tfds", image_size=16, data_dir=str(tmp_path))
    batch = next(workload.batches("train", 6, seed=0))
    assert sorted(batch["labels"].tolist()) == [0, 0, 0, 1, 1, 1]
    # The official validation labels of the first four images (tfds's validation_labels.txt);
    # tfds stores examples in its own shuffled order.
    source = workload.source("validation")
    labels = {source[i]["file_name"].decode(): source[i]["label"] for i in range(len(source))}
    assert [labels[f"ILSVRC2012_val_{i:08d}.JPEG"] for i in range(1, 5)] == [65, 970, 230, 809]
    val = next(workload.batches("validation", 4, seed=0))
    assert sorted(val["labels"].tolist()) == [65, 230, 809, 970]


def test_prepare_imagenet_v2_from_its_archive_layout(tmp_path):
    """tfds's imagenet_v2 builder (TF-free) on a tiny folder in the archive's layout."""
    extracted = tmp_path / "extracted"
    for class_id, n in (("0", 2), ("999", 1)):
        folder = extracted / "imagenetv2-matched-frequency-format-val" / class_id
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"{i}.jpeg").write_bytes(_jpeg(30, 20, i))
    prepare_tfds.prepare_imagenet_v2(tmp_path, extracted)
    workload = Imagenet(size="tiny", data="tfds", image_size=8, data_dir=str(tmp_path))
    (batch,) = list(workload.batches("test", 4, seed=0))
    assert sorted(batch["labels"][:3].tolist()) == [0, 0, 999]
    assert batch["weights"].tolist() == [1, 1, 1, 0]
    url, sha256 = prepare_tfds.v2_source()
    assert url.endswith("imagenetv2-matched-frequency.tar.gz") and len(sha256) == 64


def test_config_lists_every_constructor_field():
    import inspect
    from pathlib import Path

    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parents[2] / "configs" / "workload" / "imagenet.yaml"
    cfg = OmegaConf.load(path)
    fields = set(inspect.signature(Imagenet).parameters)
    assert set(cfg.workload) - {"_target_"} == fields
    assert cfg.workload.data == "mini" and cfg.trainer.objective == "validation/accuracy"
