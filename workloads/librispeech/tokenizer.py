"""SentencePiece tokenizers: trained on training transcripts, cached, loaded.

Our tokenizers reserve id 0 for ``<pad>``, which doubles as the CTC blank, and have no
BOS/EOS (CTC needs neither). AlgoPerf's ``spm_model.vocab`` (the npy layout) keeps
SentencePiece's defaults instead (``<unk>`` = 0 = blank, EOS appended to every target); its
targets are used as stored, and decoding drops control pieces either way.
"""

import io
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` through a temp file in the same directory, then renames."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def train(texts: Iterable[str], vocab_size: int) -> bytes:
    """A unigram SentencePiece model (serialized) with at most ``vocab_size`` pieces.

    Character coverage 1.0 as AlgoPerf; single-threaded, so the result is deterministic.
    A small corpus may yield fewer pieces than asked (the model's output layer keeps
    ``vocab_size`` logits; unused ones only ever get pushed down).
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def load(model: bytes | str | os.PathLike) -> spm.SentencePieceProcessor:
    """A processor from serialized bytes or a model file."""
    if not isinstance(model, bytes):
        model = Path(model).read_bytes()
    return spm.SentencePieceProcessor(model_proto=model)


def cached(path: str | os.PathLike, texts_fn, vocab_size: int) -> spm.SentencePieceProcessor:
    """Loads ``path``, or trains on ``texts_fn()`` and stores the model there first."""
    path = Path(path)
    if not path.exists():
        write_atomic(path, train(texts_fn(), vocab_size))
    return load(path)


def encode(sp: spm.SentencePieceProcessor, text: str) -> list[int]:
    return sp.encode(text, out_type=int)


def decode(sp: spm.SentencePieceProcessor, ids) -> str:
    """Detokenized text; ids outside the model's vocabulary (unused logits) are dropped."""
    size = sp.get_piece_size()
    return sp.decode([int(i) for i in ids if 0 <= int(i) < size])
