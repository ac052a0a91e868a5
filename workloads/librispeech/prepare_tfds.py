"""Prepares the real tfds ``librispeech`` (config ``default``) in the ``array_record`` format.

Usage: ``python -m workloads.librispeech.prepare_tfds --data_dir DIR [--archives DIR]``

Downloads the seven LibriSpeech archives from openslr.org (about 60 GB, needs network; or
give a folder that already holds ``dev-clean.tar.gz`` etc. with ``--archives``), extracts
them, decodes the FLAC files to int16 samples and runs tfds's ``download_and_prepare
(file_format="array_record")`` with those examples, which writes the splits under
``DIR/librispeech/default/2.1.1/``. The workload then reads them with ``data=tfds``.

Why not plain ``tfds build librispeech``: its example generator and Audio encoder call
TensorFlow's file API and pydub, and this project installs neither TensorFlow nor pydub.
We hand tfds already-decoded arrays (what its Audio feature stores anyway) and build the
feature without TensorFlow (:func:`tfds_source.tf_free_audio`). FLAC decoding needs
``soundfile`` (``pip install soundfile``) or the ``ffmpeg`` program.
"""

import argparse
import os
import shutil
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np

from workloads.librispeech import tfds_source

OPENSLR = "https://www.openslr.org/resources/12/"
ARCHIVES = {
    "dev_clean": "dev-clean.tar.gz",
    "dev_other": "dev-other.tar.gz",
    "test_clean": "test-clean.tar.gz",
    "test_other": "test-other.tar.gz",
    "train_clean100": "train-clean-100.tar.gz",
    "train_clean360": "train-clean-360.tar.gz",
    "train_other500": "train-other-500.tar.gz",
}


def decode_flac(path: Path) -> np.ndarray:
    """int16 samples of a 16 kHz mono FLAC file (soundfile, else the ffmpeg program)."""
    try:
        import soundfile
    except ImportError:
        soundfile = None
    if soundfile is not None:
        samples, _ = soundfile.read(path, dtype="int16")
        return samples
    if shutil.which("ffmpeg"):
        raw = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", os.fspath(path), "-f", "s16le", "-ac", "1", "-"],
            check=True,
            capture_output=True,
        ).stdout
        return np.frombuffer(raw, np.int16).copy()
    raise RuntimeError(
        "Decoding LibriSpeech's FLAC files needs `pip install soundfile` or the ffmpeg program."
    )


def fetch(archive_dir: Path, extract_dir: Path, split: str) -> Path:
    """Downloads (unless present) and extracts one archive; returns the extracted folder."""
    name = ARCHIVES[split]
    archive = archive_dir / name
    if not archive.exists():
        archive_dir.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(name + ".partial")
        print(f"downloading {OPENSLR + name} -> {archive}")
        with urllib.request.urlopen(OPENSLR + name) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out)
        os.replace(partial, archive)
    target = extract_dir / split
    if not (target / "LibriSpeech").is_dir():
        tmp = extract_dir / f"{split}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def examples(folder: Path, decode=decode_flac) -> Iterator[tuple[str, dict]]:
    """``(key, example)`` for every utterance under ``folder/LibriSpeech/<subset>/``, in the
    tfds librispeech format."""
    for transcripts in sorted(folder.glob("LibriSpeech/*/*/*/*.trans.txt")):
        for line in transcripts.read_text().splitlines():
            if not line.strip():
                continue
            key, text = line.strip().split(" ", 1)
            speaker, chapter = (int(x) for x in key.split("-")[:2])
            audio = decode(transcripts.parent / f"{key}.flac")
            example = {
                "id": key,
                "speaker_id": speaker,
                "chapter_id": chapter,
                "speech": np.asarray(audio, np.int16),
                "text": text,
            }
            yield key, example


def prepare_from_extracted(
    data_dir: str | os.PathLike, folders: dict[str, Path], decode=decode_flac
) -> None:
    """Runs tfds's ``download_and_prepare`` (array_record) on extracted archives."""
    try:
        import importlib_resources  # noqa: F401  (tfds's builders need it to prepare)
    except ImportError as err:
        raise ImportError(
            "Preparing tfds librispeech needs the package importlib_resources."
        ) from err
    import tensorflow_datasets as tfds

    def split_generators(builder, _dl_manager):
        with_metadata = [f for f in folders.values() if (f / "LibriSpeech/SPEAKERS.TXT").exists()]
        if with_metadata:
            builder._populate_metadata(with_metadata)
        return {split: examples(folder, decode) for split, folder in folders.items()}

    with tfds_source.tf_free_audio():
        builder = tfds.builder(
            f"{tfds_source.TFDS_NAME}/{tfds_source.TFDS_CONFIG}:{tfds_source.TFDS_VERSION}",
            data_dir=os.fspath(data_dir),
        )
        with mock.patch.object(type(builder), "_split_generators", split_generators):
            builder.download_and_prepare(file_format="array_record")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data_dir",
        default=os.environ.get("SKETCHY_DATA_DIR", "~/.cache/sketchy"),
        help="root data directory (the workload's data_dir)",
    )
    parser.add_argument("--archives", default=None, help="a folder with the .tar.gz archives")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).expanduser()
    downloads = data_dir / "downloads" / "librispeech"
    archives = Path(args.archives).expanduser() if args.archives else downloads
    folders = {split: fetch(archives, downloads / "extracted", split) for split in ARCHIVES}
    prepare_from_extracted(data_dir, folders)
    print(f"librispeech prepared under {tfds_source.variant_dir(data_dir)}")


if __name__ == "__main__":
    main()
