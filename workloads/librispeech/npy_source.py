"""AlgoPerf's preprocessed LibriSpeech: ``<split>.csv`` + ``<split>/<utt>_audio.npy`` /
``<utt>_targets.npy`` under ``<data_dir>/librispeech/``, with its tokenizer
``spm_model.vocab`` (a serialized SentencePiece model despite the name).

AlgoPerf's ``datasets/dataset_setup.py --librispeech`` writes this layout: audio as int64
samples at int16 scale (utterances over 20 s dropped), targets as int32 token ids with EOS
appended. Each ``<split>.csv`` lists utterance ids in a column named ``id`` (pandas
``to_csv``, so a leading index column). Reading needs only NumPy.
"""

import csv
import os
from pathlib import Path

import numpy as np

SPLITS = {
    "train": ("train-clean-100", "train-clean-360", "train-other-500"),
    "validation": ("dev-clean", "dev-other"),
    "test": ("test-clean",),
}
TOKENIZER_FILE = "spm_model.vocab"


def root(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir).expanduser() / "librispeech"


def prepare_command(data_dir: str | os.PathLike) -> str:
    return (
        "AlgoPerf's `python3 datasets/dataset_setup.py --data_dir "
        f"{Path(data_dir).expanduser()} --temp_dir {Path(data_dir).expanduser()}/tmp "
        "--librispeech` (in a checkout of mlcommons/algorithmic-efficiency; needs ffmpeg, "
        "downloads ~60 GB, writes ~390 GB)"
    )


def missing_files(data_dir: str | os.PathLike, split: str) -> list[str]:
    """Files of ``split`` (and the tokenizer) that ``data_dir`` lacks."""
    base = root(data_dir)
    names = [TOKENIZER_FILE] + [f"{name}.csv" for name in SPLITS[split]]
    missing = [name for name in names if not (base / name).is_file()]
    missing += [f"{name}/" for name in SPLITS[split] if not (base / name).is_dir()]
    return missing


def _check(data_dir, split: str) -> None:
    missing = missing_files(data_dir, split)
    if missing:
        raise FileNotFoundError(
            f"LibriSpeech .npy data ({split}) not found: {root(data_dir)} lacks "
            f"{', '.join(missing)}. Prepare it with {prepare_command(data_dir)}, "
            "or use workload.data=mini for the offline mini dataset."
        )


def _read_ids(csv_path: Path) -> list[str]:
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    column = rows[0].index("id") if "id" in rows[0] else 1
    return [row[column] for row in rows[1:] if row]


class NpySplit:
    """Random-access ``(samples, token ids)`` pairs of one split (several subsets joined)."""

    def __init__(self, base: Path, subsets) -> None:
        self._base = base
        self._ids = [(name, utt) for name in subsets for utt in _read_ids(base / f"{name}.csv")]

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        subset, utt = self._ids[i]
        audio = np.load(self._base / subset / f"{utt}_audio.npy")
        targets = np.load(self._base / subset / f"{utt}_targets.npy")
        return audio, targets.astype(np.int32)


def open_split(data_dir: str | os.PathLike, split: str) -> NpySplit:
    """The utterances of ``split`` ("train", "validation" or "test").

    Raises:
        FileNotFoundError: (one line) naming what is missing and how to prepare it.
    """
    _check(data_dir, split)
    return NpySplit(root(data_dir), SPLITS[split])


def tokenizer_path(data_dir: str | os.PathLike) -> Path:
    path = root(data_dir) / TOKENIZER_FILE
    if not path.is_file():
        _check(data_dir, "train")
    return path
