"""Conformer encoder with a CTC head (Gulati et al. 2020), as the AlgoPerf/init2winit model.

Waveform -> log-mel front end (:mod:`.frontend`, no parameters) -> per-bin normalization
-> SpecAugment (training only) -> two 3x3 stride-2 convolutions with ReLU -> Dense to
``encoder_dim`` + sinusoidal positions -> ``num_layers`` Conformer blocks -> LayerNorm ->
Dense to the vocabulary (CTC logits, blank id 0). Each block is

    x + 1/2 FFN(x);  + MHSA(x);  + ConvModule(x);  + 1/2 FFN(x);  LayerNorm

with the reference's details: LayerNorms scale by ``1 + scale`` (scale initialized to 0),
attention has a learned per-dimension query scale (softplus, 1 at init) and padding masks,
the convolution module is GLU -> depthwise conv -> padding-aware BatchNorm -> swish ->
Dense, and padding frames are zeroed where the reference zeroes them. Presets are plain
data (:data:`SIZE_PRESETS`); parameter counts are checked in the tests.
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from workloads.librispeech import frontend

# paper: init2winit's `conformer` default, the paper's 16-layer model (104,883,200 params at
# vocabulary 1024); algoperf: AlgoPerf's 4 layers (32,321,792); tiny: runs on a laptop CPU.
SIZE_PRESETS: dict[str, dict] = {
    "paper": {
        "num_layers": 16,
        "encoder_dim": 512,
        "num_heads": 8,
        "ff_multiplier": 4,
        "conv_kernel_size": 5,
        "batch_norm_momentum": 0.999,
        "subsample_channels": None,
    },
    "algoperf": {
        "num_layers": 4,
        "encoder_dim": 512,
        "num_heads": 8,
        "ff_multiplier": 4,
        "conv_kernel_size": 5,
        "batch_norm_momentum": 0.999,
        "subsample_channels": None,
    },
    # A few hundred steps is all a laptop gets: running BatchNorm averages must keep up.
    # Narrow subsampling convolutions: at the reference's width (= encoder_dim) the second
    # 3x3 convolution is ~70% of a small model's FLOPs.
    "tiny": {
        "num_layers": 3,
        "encoder_dim": 96,
        "num_heads": 4,
        "ff_multiplier": 4,
        "conv_kernel_size": 5,
        "batch_norm_momentum": 0.99,
        "subsample_channels": 32,
    },
}
xavier = nn.initializers.xavier_uniform()


def resolve_size(size: str, **overrides) -> dict:
    """The preset ``size`` with every non-``None`` override applied.

    Raises:
        ValueError: on an unknown preset or field.
    """
    if size not in SIZE_PRESETS:
        raise ValueError(
            f"Unknown librispeech size preset {size!r}; use one of {sorted(SIZE_PRESETS)}."
        )
    cfg = dict(SIZE_PRESETS[size])
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"Unknown librispeech model fields {sorted(unknown)}.")
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


class LayerNorm(nn.Module):
    """LayerNorm scaling by ``1 + scale`` (scale starts at 0), epsilon 1e-6."""

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        scale = self.param("scale", nn.initializers.zeros, (dim,))
        bias = self.param("bias", nn.initializers.zeros, (dim,))
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-6) * (1.0 + scale) + bias


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """``(length, dim)`` sin/cos timing signal, timescales 1..1e4 (static constant)."""
    half = dim // 2
    increment = math.log(1e4) / max(half - 1, 1)
    inv = np.exp(-increment * np.arange(half))
    angles = np.arange(length)[:, None] * inv[None, :]
    signal = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    return np.pad(signal, ((0, 0), (0, dim % 2))).astype(np.float32)


class Subsample(nn.Module):
    """Two 3x3 stride-2 convolutions (time and frequency), Dense, positions, dropout."""

    dim: int
    channels: int
    dropout_rate: float

    @nn.compact
    def __call__(self, features, paddings, *, train: bool):
        x = features[..., None]
        for _ in range(2):
            # Symmetric padding, not "SAME": SAME pads odd lengths on the left, so the stride
            # grid (and every output) would depend on how much padding the batch has.
            conv = nn.Conv(
                self.channels, (3, 3), (2, 2), padding=((1, 1), (1, 1)), kernel_init=xavier
            )
            x = conv(x)
            x = nn.relu(x)
            paddings = paddings[:, ::2]  # frame t of the output starts at input frame 2t
            x = x * (1.0 - paddings)[:, :, None, None]
        batch, frames, bins, channels = x.shape
        x = nn.Dense(self.dim, kernel_init=xavier)(x.reshape(batch, frames, bins * channels))
        x = x + sinusoidal_positions(frames, self.dim)[None]
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return x, paddings


class FeedForward(nn.Module):
    dim: int
    multiplier: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x, valid, *, train: bool):
        x = LayerNorm()(x)
        x = nn.swish(nn.Dense(self.dim * self.multiplier, kernel_init=xavier)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x) * valid
        x = nn.Dense(self.dim, kernel_init=xavier)(x) * valid
        return nn.Dropout(self.dropout_rate, deterministic=not train)(x)


class SelfAttention(nn.Module):
    """LayerNorm, multi-head self-attention over valid frames, dropout."""

    dim: int
    num_heads: int
    dropout_rate: float
    attention_dropout_rate: float

    @nn.compact
    def __call__(self, x, valid, *, train: bool):
        head_dim = self.dim // self.num_heads
        x = LayerNorm()(x)
        project = lambda name: nn.DenseGeneral(  # noqa: E731
            (self.num_heads, head_dim), kernel_init=xavier, name=name
        )(x)
        query, key, value = project("query"), project("key"), project("value")
        # Learned per-dimension query scale, exactly 1 at init (lingvo/AlgoPerf).
        scale = self.param("query_scale", nn.initializers.zeros, (head_dim,))
        query = query * (jax.nn.softplus(scale) / jax.nn.softplus(0.0))
        keep = valid[..., 0] > 0
        mask = nn.make_attention_mask(keep, keep)
        dropout = self.attention_dropout_rate if train else 0.0
        out = nn.dot_product_attention(
            query,
            key,
            value,
            mask=mask,
            dropout_rate=dropout,
            dropout_rng=self.make_rng("dropout") if dropout > 0 else None,
            deterministic=dropout == 0.0,
            broadcast_dropout=False,
        )
        out = nn.DenseGeneral(self.dim, axis=(-2, -1), kernel_init=xavier, name="out")(out)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(out)


class MaskedBatchNorm(nn.Module):
    """BatchNorm whose batch statistics count only valid frames; scale is ``1 + scale``."""

    momentum: float
    epsilon: float = 1e-3

    @nn.compact
    def __call__(self, x, valid, *, train: bool):
        dim = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((dim,)))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((dim,)))
        scale = self.param("scale", nn.initializers.zeros, (dim,))
        bias = self.param("bias", nn.initializers.zeros, (dim,))
        if train:
            count = jnp.maximum(jnp.sum(valid), 1.0)
            mean = jnp.sum(x * valid, axis=(0, 1)) / count
            var = jnp.sum(jnp.square(x - mean) * valid, axis=(0, 1)) / count
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon) * (1.0 + scale) + bias
        return y * valid


class ConvModule(nn.Module):
    dim: int
    kernel_size: int
    momentum: float
    dropout_rate: float

    @nn.compact
    def __call__(self, x, valid, *, train: bool):
        x = LayerNorm()(x)
        gated = nn.Dense(self.dim, kernel_init=xavier)(x)
        gate = nn.Dense(self.dim, kernel_init=xavier)(x)
        x = gated * jax.nn.sigmoid(gate) * valid
        x = nn.Conv(
            self.dim,
            (self.kernel_size,),
            padding="SAME",
            feature_group_count=self.dim,
            use_bias=False,
            kernel_init=xavier,
        )(x)
        x = MaskedBatchNorm(self.momentum)(x, valid, train=train)
        x = nn.Dense(self.dim, kernel_init=xavier)(nn.swish(x))
        return nn.Dropout(self.dropout_rate, deterministic=not train)(x)


class ConformerBlock(nn.Module):
    dim: int
    num_heads: int
    ff_multiplier: int
    conv_kernel_size: int
    batch_norm_momentum: float
    dropout_rate: float
    attention_dropout_rate: float

    @nn.compact
    def __call__(self, x, valid, *, train: bool):
        ffn = lambda: FeedForward(self.dim, self.ff_multiplier, self.dropout_rate)  # noqa: E731
        x = x + 0.5 * ffn()(x, valid, train=train)
        x = x + SelfAttention(
            self.dim, self.num_heads, self.dropout_rate, self.attention_dropout_rate
        )(x, valid, train=train)
        x = x + ConvModule(
            self.dim, self.conv_kernel_size, self.batch_norm_momentum, self.dropout_rate
        )(x, valid, train=train)
        x = x + 0.5 * ffn()(x, valid, train=train)
        return LayerNorm()(x)


class Conformer(nn.Module):
    """Waveforms ``(batch, samples)`` + valid lengths -> CTC logits and frame paddings.

    ``feature_mean``/``feature_std`` normalize the 80 log-mel bins (``None``: identity).
    Random streams: ``"dropout"`` and ``"specaug"`` (training only).
    """

    vocab_size: int
    num_layers: int
    encoder_dim: int
    num_heads: int
    ff_multiplier: int
    conv_kernel_size: int
    batch_norm_momentum: float = 0.999
    subsample_channels: int | None = None  # None: encoder_dim (the reference)
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    use_specaug: bool = True
    freq_mask_count: int = 2
    time_mask_count: int = 10
    feature_mean: Sequence[float] | None = None
    feature_std: Sequence[float] | None = None

    @nn.compact
    def __call__(self, audio, audio_len, *, train: bool):
        features, paddings = frontend.log_mel(audio, audio_len)
        if self.feature_mean is not None:
            mean = np.asarray(self.feature_mean, np.float32)
            std = np.asarray(self.feature_std, np.float32)
            features = (features - mean) / std * (1.0 - paddings)[..., None]
        if train and self.use_specaug:
            features = frontend.spec_augment(
                self.make_rng("specaug"),
                features,
                paddings,
                freq_mask_count=self.freq_mask_count,
                time_mask_count=self.time_mask_count,
            )
        channels = self.subsample_channels or self.encoder_dim
        x, paddings = Subsample(self.encoder_dim, channels, self.dropout_rate)(
            features, paddings, train=train
        )
        valid = (1.0 - paddings)[..., None]
        for _ in range(self.num_layers):
            x = ConformerBlock(
                self.encoder_dim,
                self.num_heads,
                self.ff_multiplier,
                self.conv_kernel_size,
                self.batch_norm_momentum,
                self.dropout_rate,
                self.attention_dropout_rate,
            )(x, valid, train=train)
        x = LayerNorm()(x)
        logits = nn.Dense(self.vocab_size, kernel_init=xavier)(x)
        return logits, paddings
