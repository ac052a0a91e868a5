"""The librispeech workload: the paper's Conformer with CTC, evaluated by word error rate.

Implements :class:`workloads.base.Workload`. Data: the offline mini dataset of synthesized
speech (``data="mini"``, default), tfds ``librispeech`` (``"tfds"``) or AlgoPerf's
preprocessed ``.npy`` layout (``"npy"``); all three become ``(samples, token ids)``
utterances and go through the same batching (:mod:`.batching`). Model state is the
Conformer's BatchNorm statistics (``{"batch_stats": ...}``).
"""

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from workloads.librispeech import (
    batching,
    frontend,
    metrics,
    mini_dataset,
    npy_source,
    tfds_source,
    tokenizer,
)
from workloads.librispeech.model import Conformer, resolve_size

SPLITS = ("train", "validation", "test")
DATA_KINDS = ("mini", "tfds", "npy")
# Per data kind: (vocabulary, max samples per utterance, max target tokens, reader threads).
DATA_DEFAULTS = {
    "mini": (128, mini_dataset.MAX_SAMPLES, 48, 0),
    "tfds": (1024, 320_000, 256, 8),
    "npy": (1024, 320_000, 256, 8),
}
STATS_BATCH = 16


def default_data_dir() -> str:
    """``$SKETCHY_DATA_DIR``, else ``~/.cache/sketchy``."""
    return os.environ.get("SKETCHY_DATA_DIR") or os.path.expanduser("~/.cache/sketchy")


class Librispeech:
    """Conformer + CTC on LibriSpeech, with model size and data source as constructor fields.

    Args:
        size: Model preset: ``"paper"`` (16 layers, 104,883,200 parameters at vocabulary
            1024), ``"algoperf"`` (4 layers, 32,321,792) or ``"tiny"`` (CPU).
        num_layers, encoder_dim, num_heads, ff_multiplier, conv_kernel_size,
            batch_norm_momentum, subsample_channels: Override the preset's value when not
            ``None`` (``subsample_channels``: the convolutions' width; the reference's is
            ``encoder_dim``, the tiny preset's 32).
        dropout_rate: Input and residual dropout while training (reference: 0.1).
        attention_dropout_rate: Dropout on attention weights (reference: 0.0).
        use_specaug: SpecAugment while training (2 frequency masks of up to 27 bins, 10 time
            masks of up to 5% of the utterance).
        vocab_size: Output classes (SentencePiece pieces; id 0 is the CTC blank). ``None``:
            1024 for real data, 128 for the mini data.
        data: ``"mini"`` (offline, prepared on first use), ``"tfds"`` or ``"npy"``.
        data_dir: Root data directory; ``None``: ``$SKETCHY_DATA_DIR`` or ``~/.cache/sketchy``.
        max_utterances: Mini data only: synthesize N utterances split 80/10/10 (``None``:
            4,000 / 200 / 200).
        mini_noise: Mini data only: share of utterances mixed with background noise.
        max_audio_samples: Static waveform length of a batch row; longer utterances get
            weight 0. ``None``: 320,000 (20 s) for real data, 48,000 (3 s) for mini.
        max_target_length: Static token length; longer transcripts get weight 0. ``None``:
            256 for real data, 48 for mini.
        num_threads: Threads reading batches ahead (``None``: 8 for real data, 0 for mini).
        stats_utterances: Training utterances the log-mel normalization is estimated from.
    """

    name = "librispeech"
    # AlgoPerf's targets for this workload (word error rate, lower is better).
    targets = {"validation/wer": 0.085884, "test/wer": 0.052981}

    def __init__(
        self,
        size: str = "paper",
        num_layers: int | None = None,
        encoder_dim: int | None = None,
        num_heads: int | None = None,
        ff_multiplier: int | None = None,
        conv_kernel_size: int | None = None,
        batch_norm_momentum: float | None = None,
        subsample_channels: int | None = None,
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        use_specaug: bool = True,
        vocab_size: int | None = None,
        data: str = "mini",
        data_dir: str | None = None,
        max_utterances: int | None = None,
        mini_noise: float = 0.3,
        max_audio_samples: int | None = None,
        max_target_length: int | None = None,
        num_threads: int | None = None,
        stats_utterances: int = 256,
    ) -> None:
        if data not in DATA_KINDS:
            raise ValueError(f"Unknown librispeech data {data!r}; use one of {DATA_KINDS}.")
        vocab, samples, tokens, threads = DATA_DEFAULTS[data]
        self.model_config = resolve_size(
            size,
            num_layers=num_layers,
            encoder_dim=encoder_dim,
            num_heads=num_heads,
            ff_multiplier=ff_multiplier,
            conv_kernel_size=conv_kernel_size,
            batch_norm_momentum=batch_norm_momentum,
            subsample_channels=subsample_channels,
        )
        self.model_config |= {
            "vocab_size": vocab_size or vocab,
            "dropout_rate": dropout_rate,
            "attention_dropout_rate": attention_dropout_rate,
            "use_specaug": use_specaug,
        }
        self.data = data
        self.data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
        self.max_utterances = max_utterances
        self.mini_noise = mini_noise
        self.shapes = batching.Shapes(max_audio_samples or samples, max_target_length or tokens)
        self.num_threads = threads if num_threads is None else num_threads
        self.stats_utterances = stats_utterances
        self._mini: dict | None = None
        self._sources: dict[str, Any] = {}
        self._tokenizer = None
        self._model: Conformer | None = None
        self._eval_step = jax.jit(self._eval_outputs)

    # ---- data ---------------------------------------------------------------------------

    def _mini_data(self) -> dict:
        if self._mini is None:
            self._mini = mini_dataset.load(self.data_dir, self.max_utterances, self.mini_noise)
        return self._mini

    def _cache_dir(self) -> Path:
        if self.data == "mini":
            return self._mini_data()["dir"]
        return Path(self.data_dir) / "librispeech_cache" / self.data

    @property
    def tokenizer(self):
        """The SentencePiece processor (trained on the training transcripts, cached)."""
        if self._tokenizer is None:
            vocab = self.model_config["vocab_size"]
            if self.data == "npy":
                self._tokenizer = tokenizer.load(npy_source.tokenizer_path(self.data_dir))
            elif self.data == "mini":
                texts = self._mini_data()["splits"]["train"].texts
                path = self._cache_dir() / f"spm_{vocab}.model"
                self._tokenizer = tokenizer.cached(path, texts, vocab)
            else:
                texts = lambda: tfds_source.training_texts(self.data_dir)  # noqa: E731
                path = self._cache_dir() / f"spm_{vocab}.model"
                self._tokenizer = tokenizer.cached(path, texts, vocab)
            if self._tokenizer.get_piece_size() > vocab:
                raise ValueError(
                    f"The tokenizer has {self._tokenizer.get_piece_size()} pieces but "
                    f"workload.vocab_size={vocab}: set vocab_size to at least that."
                )
        return self._tokenizer

    def source(self, split: str) -> Any:
        """Random-access ``(samples, token ids)`` utterances of ``split`` (cached)."""
        _check_split(split)
        if split not in self._sources:
            if self.data == "npy":
                self._sources[split] = npy_source.open_split(self.data_dir, split)
            else:
                if self.data == "mini":
                    raw = self._mini_data()["splits"][split]
                else:
                    raw = tfds_source.open_split(self.data_dir, split)
                sp = self.tokenizer
                self._sources[split] = batching.Tokenized(
                    raw, lambda text: tokenizer.encode(sp, text)
                )
        return self._sources[split]

    def feature_stats(self) -> tuple[list[float], list[float]]:
        """Per-bin log-mel mean and std over ``stats_utterances`` evenly spaced training
        utterances (computed once, cached as JSON beside the data)."""
        path = self._cache_dir() / f"feature_stats_{self.stats_utterances}.json"
        if path.exists():
            stats = json.loads(path.read_text())
            return stats["mean"], stats["std"]
        train = self.source("train")
        picks = np.unique(np.linspace(0, len(train) - 1, self.stats_utterances).astype(int))
        items = [train[int(i)] for i in picks]
        longest = max(len(a) for a, _ in items)

        def batches():
            for start in range(0, len(items), STATS_BATCH):
                chunk = items[start : start + STATS_BATCH]
                audio = np.zeros((len(chunk), longest), np.int16)
                for row, (samples, _) in enumerate(chunk):
                    audio[row, : len(samples)] = samples
                yield audio, np.array([len(a) for a, _ in chunk], np.int32)

        mean, std = frontend.feature_stats(batches())
        tokenizer.write_atomic(path, json.dumps({"mean": mean, "std": std}).encode())
        return mean, std

    def batches(
        self,
        split: str,
        global_batch_size: int,
        *,
        seed: int,
        num_shards: int = 1,
        start_step: int = 0,
    ) -> Iterator[dict]:
        """Train: infinite, shuffled from ``seed``, from batch ``start_step`` on. Else one pass."""
        kwargs = {"shapes": self.shapes, "num_shards": num_shards, "num_threads": self.num_threads}
        if split == "train":
            return batching.train_batches(
                self.source(split), global_batch_size, seed=seed, start_step=start_step, **kwargs
            )
        return batching.eval_batches(self.source(split), global_batch_size, **kwargs)

    def fake_batch(self, global_batch_size: int, num_shards: int = 1) -> dict:
        """An all-padding batch with the shapes and dtypes of a training batch."""
        return batching.collate([], global_batch_size, self.shapes)

    # ---- model --------------------------------------------------------------------------

    @property
    def model(self) -> Conformer:
        """The Conformer with its feature normalization (touches the data on first use)."""
        if self._model is None:
            mean, std = self.feature_stats()
            self._model = Conformer(
                **self.model_config, feature_mean=tuple(mean), feature_std=tuple(std)
            )
        return self._model

    def init(self, rng: jax.Array) -> tuple[Any, dict]:
        """Parameters and BatchNorm statistics (no data needed: the shapes do not depend on
        the feature normalization or the utterance length)."""
        bare = Conformer(**self.model_config)
        audio = jnp.zeros((1, 8_000), jnp.int16)
        variables = bare.init({"params": rng}, audio, jnp.array([8_000]), train=False)
        return variables["params"], {"batch_stats": variables["batch_stats"]}

    def apply(self, params, model_state, batch, *, rng, train):
        """``((logits, logit paddings), new model state)``; training updates BatchNorm."""
        variables = {"params": params, **model_state}
        if not train:
            out = self.model.apply(variables, batch["audio"], batch["audio_len"], train=False)
            return out, model_state
        rng = jax.random.key(0) if rng is None else rng
        dropout_rng, specaug_rng = jax.random.split(rng)
        out, updates = self.model.apply(
            variables,
            batch["audio"],
            batch["audio_len"],
            train=True,
            rngs={"dropout": dropout_rng, "specaug": specaug_rng},
            mutable=["batch_stats"],
        )
        return out, {**model_state, **updates}

    def loss(self, params, model_state, batch, *, rng, train):
        """``(summed CTC loss, (number of target tokens, model state))``."""
        (logits, paddings), model_state = self.apply(
            params, model_state, batch, rng=rng, train=train
        )
        summed, count = metrics.ctc_loss_sum(
            logits, paddings, batch["targets"], batch["target_len"], batch["weights"]
        )
        return summed, (count, model_state)

    # ---- evaluation ---------------------------------------------------------------------

    def _eval_outputs(self, params, model_state, batch):
        (logits, paddings), _ = self.apply(params, model_state, batch, rng=None, train=False)
        summed, count = metrics.ctc_loss_sum(
            logits, paddings, batch["targets"], batch["target_len"], batch["weights"]
        )
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), paddings, summed, count

    def evaluate(
        self,
        params,
        model_state,
        split: str,
        *,
        global_batch_size: int,
        num_shards: int = 1,
        put: Callable[[dict], dict] = lambda b: b,
    ) -> dict[str, float]:
        """CTC loss per target token and corpus WER (greedy decoding) over ``split``.

        ``"train"`` is evaluated on its first ``len(validation)`` utterances, as AlgoPerf's
        ``eval_train`` subset.
        """
        _check_split(split)
        limit = len(self.source("validation")) if split == "train" else None
        sp = self.tokenizer
        references, hypotheses, loss_sum, count = [], [], 0.0, 0.0
        for batch in batching.eval_batches(
            self.source(split),
            global_batch_size,
            shapes=self.shapes,
            num_shards=num_shards,
            limit=limit,
            num_threads=self.num_threads,
        ):
            ids, paddings, summed, n = self._eval_step(params, model_state, put(batch))
            ids, paddings = (np.asarray(jax.device_get(x)) for x in (ids, paddings))
            rows = np.flatnonzero(batch["weights"] > 0)
            decoded = metrics.greedy_decode(ids[rows], paddings[rows])
            hypotheses += [tokenizer.decode(sp, tokens) for tokens in decoded]
            references += [
                tokenizer.decode(sp, batch["targets"][r, : batch["target_len"][r]]) for r in rows
            ]
            loss_sum += float(summed)
            count += float(n)
        return {
            f"{split}/loss": loss_sum / max(count, 1.0),
            f"{split}/wer": metrics.word_error_rate(references, hypotheses),
        }


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown librispeech split {split!r}; use one of {SPLITS}.")
