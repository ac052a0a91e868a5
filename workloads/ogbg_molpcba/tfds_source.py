"""The real ogbg-molpcba: tfds ``ogbg_molpcba:0.1.3`` read with ``tfds.data_source``.

``tfds.data_source`` gives random access to ArrayRecord files with no TensorFlow. The data
must have been prepared in the ``array_record`` format (see :mod:`.prepare_tfds`); when it
is absent the error names the missing files and the command that prepares them. There is
never a silent fallback to the mini dataset.
"""

import os
from pathlib import Path
from typing import Any

TFDS_NAME = "ogbg_molpcba"
TFDS_VERSION = "0.1.3"
METADATA_FILES = ("dataset_info.json", "features.json")


def variant_dir(data_dir: str | os.PathLike) -> Path:
    """The tfds directory of the prepared dataset under ``data_dir``."""
    return Path(data_dir).expanduser() / TFDS_NAME / TFDS_VERSION


def missing_files(data_dir: str | os.PathLike, split: str) -> list[str]:
    """Files of ``split`` that a prepared ``array_record`` dataset has and ``data_dir`` lacks."""
    vdir = variant_dir(data_dir)
    missing = [name for name in METADATA_FILES if not (vdir / name).is_file()]
    pattern = f"{TFDS_NAME}-{split}.array_record-*-of-*"
    if not (vdir.is_dir() and any(vdir.glob(pattern))):
        missing.append(pattern)
    return missing


def prepare_command(data_dir: str | os.PathLike) -> str:
    """The shell command that prepares the dataset under ``data_dir``."""
    return f"python -m workloads.ogbg_molpcba.prepare_tfds --data_dir {data_dir}"


def open_split(data_dir: str | os.PathLike, split: str) -> Any:
    """A random-access sequence of the tfds examples of ``split``.

    Raises:
        FileNotFoundError: (one line) if the prepared ``array_record`` files are absent.
    """
    import tensorflow_datasets as tfds  # deferred: importing tfds takes seconds

    try:
        return tfds.data_source(
            f"{TFDS_NAME}:{TFDS_VERSION}",
            split=split,
            data_dir=os.fspath(Path(data_dir).expanduser()),
            download=False,
        )
    except Exception as err:
        # tfds reports absent data confusingly (e.g. "file format TFRECORD is not supported").
        missing = missing_files(data_dir, split)
        if not missing:
            raise
        raise FileNotFoundError(
            f"Real ogbg_molpcba data not found: {variant_dir(data_dir)} lacks "
            f"{', '.join(missing)}. Prepare it once (downloads ~40 MB from snap.stanford.edu, "
            f"needs network, writes ~1 GB) with `{prepare_command(data_dir)}`, "
            "or use workload.data=mini for the offline mini dataset."
        ) from err
