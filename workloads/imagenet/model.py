"""ResNet v1.5 (bottleneck blocks) in flax linen, as in the flax ImageNet example / AlgoPerf.

``paper`` is ResNet-50: stem ``conv 7x7/2 -> BN -> ReLU -> max-pool 3x3/2``, stages of
(3, 4, 6, 3) bottleneck blocks with 64 * 2^i filters (x4 at each block's output, stride 2
on the 3x3 convolution of a stage's first block), global mean pool and a dense classifier:
25,557,032 parameters with 1,000 classes. Convolutions have no bias (BatchNorm follows).
``tiny`` is the same family at stages (1, 1, 1, 1) and 16 base filters, for CPU runs.
BatchNorm's running statistics are the model state (``batch_stats``) the trainer carries.
"""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax.numpy as jnp

SIZE_PRESETS: dict[str, dict] = {
    "paper": {"stage_sizes": (3, 4, 6, 3), "width": 64},
    "tiny": {"stage_sizes": (1, 1, 1, 1), "width": 16},
}

# The per-channel statistics of ImageNet's training images (0-255 scale), as everywhere.
RGB_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
RGB_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def resolve_size(
    size: str, stage_sizes: Sequence[int] | None = None, width: int | None = None
) -> dict:
    """The preset ``size`` with any non-``None`` field overriding it.

    Raises:
        ValueError: if ``size`` is not a known preset.
    """
    if size not in SIZE_PRESETS:
        raise ValueError(
            f"Unknown imagenet size preset {size!r}; use one of {sorted(SIZE_PRESETS)}."
        )
    cfg = dict(SIZE_PRESETS[size])
    if stage_sizes is not None:
        cfg["stage_sizes"] = tuple(int(s) for s in stage_sizes)
    if width is not None:
        cfg["width"] = int(width)
    return cfg


class Bottleneck(nn.Module):
    """``1x1 -> 3x3 (stride) -> 1x1 (x4)``, each followed by BN; projection when shapes differ."""

    filters: int
    strides: int
    zero_init_last_bn: bool

    @nn.compact
    def __call__(self, x, *, train: bool):
        conv = partial(nn.Conv, use_bias=False)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5)
        y = nn.relu(norm()(conv(self.filters, (1, 1))(x)))
        y = conv(self.filters, (3, 3), (self.strides, self.strides), padding=((1, 1), (1, 1)))(y)
        y = nn.relu(norm()(y))
        y = conv(4 * self.filters, (1, 1))(y)
        # Zero-initialising the last BN scale makes every block start as the identity
        # (Goyal et al. 2017), which is what lets large-batch ResNet-50 train from step 0.
        y = norm(
            scale_init=nn.initializers.zeros if self.zero_init_last_bn else nn.initializers.ones
        )(y)
        if x.shape != y.shape:
            x = conv(4 * self.filters, (1, 1), (self.strides, self.strides), name="conv_proj")(x)
            x = norm(name="bn_proj")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """Classifier over NHWC images, uint8 (0-255) or float; normalised inside the model."""

    num_classes: int
    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    width: int = 64
    zero_init_last_bn: bool = True

    @nn.compact
    def __call__(self, images, *, train: bool):
        x = (jnp.asarray(images, jnp.float32) - jnp.array(RGB_MEAN)) / jnp.array(RGB_STD)
        x = nn.Conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
        x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, blocks in enumerate(self.stage_sizes):
            for j in range(blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = Bottleneck(self.width * 2**i, strides, self.zero_init_last_bn)(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01))(x)
