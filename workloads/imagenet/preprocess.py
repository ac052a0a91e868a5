"""JPEG bytes -> uint8 images: ImageNet's train and eval crops, with PIL and NumPy.

The crops follow the ResNet/Inception recipe of AlgoPerf's and the flax example's pipelines:

- train: a random crop covering ``area`` in ``[min_area, 1]`` of the image with aspect
  ratio in ``[3/4, 4/3]`` (10 attempts, else the central crop), bicubic resize to
  ``image_size``, horizontal flip with probability 1/2;
- eval: the central crop of side ``crop_fraction`` (224/256) of the shorter side, bicubic
  resize to ``image_size``.

Why PIL rather than ``tf.image``: the project does not depend on TensorFlow (tfds reads
ArrayRecord files without it). PIL's ``draft`` lets the JPEG decoder skip DCT scales it
does not need, the counterpart of ``decode_and_crop_jpeg``'s partial decoding. Images are
returned as uint8 (4x less host-to-device traffic); the model normalises them.
"""

import io
import math

import numpy as np
from PIL import Image

CROP_FRACTION = 0.875  # 224 / 256
ASPECT_RANGE = (3 / 4, 4 / 3)
MAX_ATTEMPTS = 10


def _open(jpeg: bytes) -> Image.Image:
    """A lazily decoded image: only the header is read until pixels are needed."""
    return Image.open(io.BytesIO(jpeg))


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def random_crop_box(
    width: int, height: int, rng: np.random.Generator, min_area: float
) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of a random area/aspect crop (Inception-style)."""
    area = width * height
    log_lo, log_hi = math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1])
    for _ in range(MAX_ATTEMPTS):
        target = area * rng.uniform(min_area, 1.0)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    return center_crop_box(width, height, CROP_FRACTION)


def center_crop_box(width: int, height: int, fraction: float) -> tuple[int, int, int, int]:
    """The central square of side ``fraction * min(width, height)``."""
    side = max(1, int(round(fraction * min(width, height))))
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _decode_box(jpeg: bytes, box, image_size: int) -> Image.Image:
    image = _open(jpeg)
    w, h = image.size
    left, top, right, bottom = box
    # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the crop stays >= 2x the output size.
    scale_w, scale_h = (right - left) / (2 * image_size), (bottom - top) / (2 * image_size)
    image.draft("RGB", (max(1, int(w / scale_w)), max(1, int(h / scale_h))))
    sx, sy = image.size[0] / w, image.size[1] / h
    image = image.convert("RGB") if image.mode != "RGB" else image
    # Crop, then resize (as decode_and_crop_jpeg + resize): no pixel outside the box leaks
    # into the result through the bicubic kernel's support.
    scaled = (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))
    return image.crop(scaled).resize((image_size, image_size), Image.Resampling.BICUBIC)


def train_image(
    jpeg: bytes,
    rng: np.random.Generator,
    image_size: int,
    min_area: float = 0.08,
    flip: bool = True,
) -> np.ndarray:
    """Random-resized crop (+ random horizontal flip): uint8 ``[image_size, image_size, 3]``."""
    width, height = _open(jpeg).size  # reads the header only
    box = random_crop_box(width, height, rng, min_area)
    image = _to_rgb_array(_decode_box(jpeg, box, image_size))
    if flip and rng.random() < 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def eval_image(jpeg: bytes, image_size: int, crop_fraction: float = CROP_FRACTION) -> np.ndarray:
    """Central crop + resize: uint8 ``[image_size, image_size, 3]``."""
    width, height = _open(jpeg).size
    box = center_crop_box(width, height, crop_fraction)
    return _to_rgb_array(_decode_box(jpeg, box, image_size))
