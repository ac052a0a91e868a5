"""Offline mini LibriSpeech: synthesized English speech with its transcripts.

Sentences come from :mod:`.sentences` (a template grammar over a 1,239-word vocabulary);
each is spoken by espeak-ng (:mod:`.speech`) with a random accent, voice variant, rate,
pitch and leading silence, resampled to 16 kHz at int16 scale, and, for a share of the
utterances, mixed with colored background noise at 10-30 dB SNR. Validation and test
sentences never occur in training. Transcripts are upper case, as LibriSpeech's.

This is synthesized speech: far more regular than read audiobooks, so word error rates on
it are not comparable with LibriSpeech's. It exercises the whole pipeline offline.

Prepared once (about 14 ms per utterance on one core) with a progress bar and cached under
``data_dir`` as a directory written atomically (a temp directory, then a rename):
``audio.npy`` (all samples, int16, memory-mapped when read) and ``meta.npz`` (offsets,
split ids, transcripts, voices). Tokenizers and feature statistics are cached beside them.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from workloads.librispeech import sentences, speech

# Bump when the preparation changes, so stale caches are not reused.
VERSION = 1
SEED = 20230209
SPLITS = ("train", "validation", "test")
DEFAULT_SIZES = (4000, 200, 200)
MAX_SAMPLES = 48_000  # 3 s: the longest sentences at the slowest rates are spoken again faster


def split_sizes(max_utterances: int | None) -> tuple[int, int, int]:
    """(train, validation, test) utterance counts: the default, or ~80/10/10 of N."""
    if max_utterances is None:
        return DEFAULT_SIZES
    if max_utterances < 6:
        raise ValueError(f"max_utterances={max_utterances} is too small: use at least 6.")
    held_out = max(2, max_utterances // 10)
    return max_utterances - 2 * held_out, held_out, held_out


def cache_dir(data_dir: str | os.PathLike, max_utterances: int | None, noise: float) -> Path:
    """Where the prepared mini dataset lives (one directory per version, size and noise)."""
    size = "all" if max_utterances is None else str(max_utterances)
    return Path(data_dir).expanduser() / "librispeech_mini" / f"v{VERSION}_{size}_noise{noise:g}"


def draw_sentences(sizes: tuple[int, int, int]) -> list[tuple[str, int]]:
    """Unique ``(sentence, split id)`` pairs; held-out sentences never occur in training."""
    rng = np.random.default_rng(SEED)
    seen: set[str] = set()
    out = []
    for split, size in enumerate(sizes):
        count = 0
        while count < size:
            text = sentences.sentence(rng)
            if text not in seen:
                seen.add(text)
                out.append((text, split))
                count += 1
    return out


def build(
    max_utterances: int | None = None, noise: float = 0.3, progress: bool = True
) -> dict[str, np.ndarray]:
    """Synthesizes the whole mini dataset in memory (see :func:`prepare` to cache it)."""
    drawn = draw_sentences(split_sizes(max_utterances))
    interval = 0.1 if sys.stderr.isatty() else 10.0
    bar = tqdm(
        drawn, desc="mini librispeech (espeak-ng)", unit="utt", disable=not progress,
        mininterval=interval,
    )  # fmt: skip
    audio, voices, rates, pitches, snrs = [], [], [], [], []
    for i, (text, _) in enumerate(bar):
        rng = np.random.default_rng([SEED, i])
        while True:  # a rare over-long draw (slow voice) is spoken again with new settings
            samples, settings = speech.speak(text, rng, noise_prob=noise)
            if len(samples) <= MAX_SAMPLES:
                break
        audio.append(samples)
        voices.append(settings["voice"])
        rates.append(settings["rate_wpm"])
        pitches.append(settings["pitch"])
        snrs.append(np.nan if settings["snr_db"] is None else settings["snr_db"])
    lengths = np.array([len(a) for a in audio], np.int64)
    return {
        "audio": np.concatenate(audio).astype(np.int16),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]),
        "split": np.array([s for _, s in drawn], np.int8),
        "transcripts": np.array([t.upper() for t, _ in drawn]),
        "voice": np.array(voices),
        "rate_wpm": np.array(rates, np.int16),
        "pitch": np.array(pitches, np.int16),
        "snr_db": np.array(snrs, np.float32),
    }


def prepare(
    data_dir: str | os.PathLike,
    max_utterances: int | None = None,
    noise: float = 0.3,
    progress: bool = True,
) -> Path:
    """Builds and caches the mini dataset unless already cached; returns its directory."""
    final = cache_dir(data_dir, max_utterances, noise)
    if (final / "meta.npz").exists():
        return final
    arrays = build(max_utterances, noise, progress)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        np.save(tmp / "audio.npy", arrays.pop("audio"))
        np.savez(tmp / "meta.npz", **arrays)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "meta.npz").exists():  # not a concurrent preparation: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class MiniSplit:
    """Random-access utterances of one split: ``{"audio": int16 samples, "text": str}``."""

    def __init__(self, audio: np.ndarray, offsets: np.ndarray, texts, indices) -> None:
        self._audio, self._offsets, self._texts = audio, offsets, texts
        self._indices = np.asarray(indices)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> dict:
        j = self._indices[i]
        return {
            "audio": np.asarray(self._audio[self._offsets[j] : self._offsets[j + 1]]),
            "text": str(self._texts[j]),
        }

    def texts(self) -> list[str]:
        return [str(self._texts[j]) for j in self._indices]


def load(
    data_dir: str | os.PathLike,
    max_utterances: int | None = None,
    noise: float = 0.3,
    progress: bool = True,
) -> dict:
    """Prepares if needed, then loads ``{"dir": Path, "splits": {name: MiniSplit}, "meta"}``."""
    root = prepare(data_dir, max_utterances, noise, progress)
    audio = np.load(root / "audio.npy", mmap_mode="r")
    with np.load(root / "meta.npz") as f:
        meta = {k: f[k] for k in f.files}
    return {
        "dir": root,
        "splits": {
            name: MiniSplit(
                audio, meta["offsets"], meta["transcripts"], np.flatnonzero(meta["split"] == k)
            )
            for k, name in enumerate(SPLITS)
        },
        "meta": meta,
    }
