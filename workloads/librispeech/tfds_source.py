"""The real LibriSpeech through tfds ``librispeech`` (config ``default``, 2.1.1), without
TensorFlow.

``tfds.data_source`` reads the ``array_record`` files with random access and decodes
examples with NumPy. Only the ``Audio`` feature's constructor and its ``dtype`` ask for
TensorFlow (to name a ``tf.DType``); :func:`tf_free_audio` answers them with the NumPy dtype
while the builder is created. Everything else (reading; writing in :mod:`.prepare_tfds`) is
tfds's own code. Splits: train = train_clean100 + train_clean360 + train_other500,
validation = dev_clean + dev_other, test = test_clean (init2winit's).
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

TFDS_NAME = "librispeech"
TFDS_CONFIG = "default"
TFDS_VERSION = "2.1.1"
SPLITS = {
    "train": ("train_clean100", "train_clean360", "train_other500"),
    "validation": ("dev_clean", "dev_other"),
    "test": ("test_clean",),
}
METADATA_FILES = ("dataset_info.json", "features.json")


@contextlib.contextmanager
def tf_free_audio() -> Iterator[None]:
    """Lets tfds build ``Audio`` features (and so the librispeech builder) without TF."""
    from tensorflow_datasets.core.features import audio_feature

    def decoder_init(self, file_format, np_dtype, shape):
        self._file_format = file_format
        self._np_dtype = np_dtype
        self._dtype = np.dtype(np_dtype)
        self._shape = shape
        self._channels = shape[1] if len(shape) > 1 else 1

    with (
        mock.patch.object(audio_feature._AudioDecoder, "__init__", decoder_init),
        mock.patch.object(audio_feature.Audio, "dtype", property(lambda self: self.np_dtype)),
    ):
        yield


def variant_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir).expanduser() / TFDS_NAME / TFDS_CONFIG / TFDS_VERSION


def prepare_command(data_dir: str | os.PathLike) -> str:
    return f"python -m workloads.librispeech.prepare_tfds --data_dir {data_dir}"


def missing_files(data_dir: str | os.PathLike, split: str) -> list[str]:
    vdir = variant_dir(data_dir)
    missing = [name for name in METADATA_FILES if not (vdir / name).is_file()]
    for name in SPLITS[split]:
        pattern = f"{TFDS_NAME}-{name}.array_record-*-of-*"
        if not (vdir.is_dir() and any(vdir.glob(pattern))):
            missing.append(pattern)
    return missing


def _data_source(data_dir, subsets: str, **kwargs):
    import tensorflow_datasets as tfds  # deferred: importing tfds takes seconds

    with tf_free_audio():
        return tfds.data_source(
            f"{TFDS_NAME}/{TFDS_CONFIG}:{TFDS_VERSION}",
            split=subsets,
            data_dir=os.fspath(Path(data_dir).expanduser()),
            download=False,
            **kwargs,
        )


class TfdsSplit:
    """Random-access ``{"audio": int16 samples, "text": str}`` items of a tfds source."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> dict:
        example = self._source[i]
        return {"audio": np.asarray(example["speech"]), "text": example["text"]}


def open_split(data_dir: str | os.PathLike, split: str) -> TfdsSplit:
    """The utterances of ``split`` ("train", "validation" or "test").

    Raises:
        FileNotFoundError: (one line) if the prepared ``array_record`` files are absent.
    """
    try:
        return TfdsSplit(_data_source(data_dir, "+".join(SPLITS[split])))
    except Exception as err:
        missing = missing_files(data_dir, split)
        if not missing:
            raise
        raise FileNotFoundError(
            f"Real LibriSpeech (tfds, {split}) not found: {variant_dir(data_dir)} lacks "
            f"{', '.join(missing)}. Prepare it once (downloads ~60 GB from openslr.org, "
            f"needs network and a FLAC decoder) with `{prepare_command(data_dir)}`, "
            "or use workload.data=mini for the offline mini dataset."
        ) from err


def training_texts(data_dir: str | os.PathLike, max_chars: int = 10_000_000) -> Iterator[str]:
    """Transcripts of train_clean100, up to ``max_chars`` characters (AlgoPerf's tokenizer
    corpus), for training the SentencePiece model."""
    open_split(data_dir, "train")  # the one-line error when absent
    source = _data_source(data_dir, SPLITS["train"][0])
    chars = 0
    for i in range(len(source)):
        text = source[i]["text"]
        text = text.decode() if isinstance(text, bytes) else str(text)
        chars += len(text) + 1
        if chars > max_chars:
            return
        yield text
