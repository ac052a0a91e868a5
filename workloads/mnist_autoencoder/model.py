"""Hinton & Salakhutdinov's deep autoencoder (784-1000-500-250-30, mirrored decoder).

As in the KrADagrad experiments (arXiv 2305.19416, Sec. 5, and its public notebook): dense layers,
ReLU between them, a linear 30-unit code, and a decoder mirroring the encoder whose last
layer outputs per-pixel logits (the loss is a sigmoid cross-entropy).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

# Encoder widths per preset; the last one is the code size.
PRESETS = {
    "paper": (1000, 500, 250, 30),  # 2,837,314 parameters (encoder + decoder)
    "tiny": (64, 32, 16, 8),  # fast on CPU
}
ACTIVATIONS = {"relu": nn.relu, "sigmoid": nn.sigmoid, "tanh": jnp.tanh}


def resolve_widths(size: str, encoder_widths: Sequence[int] | None) -> tuple[int, ...]:
    if size not in PRESETS:
        raise ValueError(f"Unknown mnist_autoencoder size {size!r}; use one of {list(PRESETS)}.")
    widths = tuple(int(w) for w in (encoder_widths or PRESETS[size]))
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"encoder_widths must be positive integers, got {encoder_widths!r}")
    return widths


class Autoencoder(nn.Module):
    """``x [B, D] -> logits [B, D]`` through ``D-w1-...-wk-...-w1-D``."""

    encoder_widths: tuple[int, ...]
    num_outputs: int = 784
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        *hidden, code = self.encoder_widths
        for w in hidden:
            x = act(nn.Dense(w)(x))
        x = nn.Dense(code)(x)  # the linear code layer
        for w in reversed(hidden):
            x = act(nn.Dense(w)(x))
        return nn.Dense(self.num_outputs)(x)
