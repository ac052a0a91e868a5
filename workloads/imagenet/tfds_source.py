"""The real ImageNet: tfds ``imagenet2012`` (train, validation) and ``imagenet_v2`` (test).

Read with ``tfds.data_source`` (random access to ArrayRecord files, no TensorFlow), images
left as JPEG bytes (``SkipDecoding``) for :mod:`.preprocess`. As in the paper and AlgoPerf,
``test`` is ImageNet-v2 ``matched-frequency`` (10,000 images, the same 1,000 classes).
The data must be prepared once in the ``array_record`` format with
``python -m workloads.imagenet.prepare_tfds``; when it is absent the error names the
missing files, where they go and the command, and nothing falls back to the mini data.
"""

import os
from pathlib import Path
from typing import Any

IMAGENET = ("imagenet2012", "5.1.0")
IMAGENET_V2 = ("imagenet_v2/matched-frequency", "3.0.0")
MANUAL_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
# Our split name -> (tfds dataset, tfds split).
SPLITS = {"train": (IMAGENET, "train"), "validation": (IMAGENET, "validation"),
          "test": (IMAGENET_V2, "test")}  # fmt: skip


def manual_dir(data_dir: str | os.PathLike) -> Path:
    """Where tfds expects the manually downloaded ImageNet tars."""
    return Path(data_dir).expanduser() / "downloads" / "manual"


def variant_dir(data_dir: str | os.PathLike, dataset: tuple[str, str]) -> Path:
    name, version = dataset
    return Path(data_dir).expanduser() / name / version


def prepare_command(data_dir: str | os.PathLike) -> str:
    return f"python -m workloads.imagenet.prepare_tfds --data_dir {data_dir}"


def is_prepared(data_dir: str | os.PathLike, split: str) -> bool:
    (name, version), tfds_split = SPLITS[split]
    vdir = variant_dir(data_dir, (name, version))
    stem = name.split("/")[0]
    return (vdir / "dataset_info.json").is_file() and any(
        vdir.glob(f"{stem}-{tfds_split}.array_record-*-of-*")
    )


def missing_message(data_dir: str | os.PathLike, split: str) -> str:
    """One line: what is missing for ``split``, where it goes, and the command."""
    dataset, _ = SPLITS[split]
    vdir = variant_dir(data_dir, dataset)
    if dataset == IMAGENET:
        absent = [t for t in MANUAL_TARS if not (manual_dir(data_dir) / t).is_file()]
        if absent:
            return (
                f"Real ImageNet not found: {vdir} is not prepared and {', '.join(absent)} "
                f"{'is' if len(absent) == 1 else 'are'} missing from {manual_dir(data_dir)}/. "
                "Download them from image-net.org (registration needed), put them there, then "
                f"run `{prepare_command(data_dir)}`; or use workload.data=mini (offline)."
            )
        return (
            f"Real ImageNet not prepared: {vdir} has no array_record files; the tars are in "
            f"{manual_dir(data_dir)}/, run `{prepare_command(data_dir)}` once."
        )
    return (
        f"ImageNet-v2 (the test split) not found: {vdir} has no array_record files. Run "
        f"`{prepare_command(data_dir)} --splits test` once (downloads 1.2 GB), or drop test "
        "from trainer.final_splits."
    )


def open_split(data_dir: str | os.PathLike, split: str) -> Any:
    """Random-access examples ``{"image": JPEG bytes, "label": int, "file_name": bytes}``.

    Raises:
        FileNotFoundError: (one line) if the prepared files are absent.
    """
    import tensorflow_datasets as tfds  # deferred: importing tfds takes seconds

    (name, version), tfds_split = SPLITS[split]
    try:
        return tfds.data_source(
            f"{name}:{version}",
            split=tfds_split,
            data_dir=os.fspath(Path(data_dir).expanduser()),
            download=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
    except Exception as err:
        # tfds reports absent data confusingly (e.g. "file format TFRECORD is not supported").
        if is_prepared(data_dir, split):
            raise
        raise FileNotFoundError(missing_message(data_dir, split)) from err
