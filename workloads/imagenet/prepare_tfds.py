"""Prepares the real tfds ImageNet in the ``array_record`` format, without TensorFlow.

Usage: ``python -m workloads.imagenet.prepare_tfds --data_dir DIR [--splits train validation test]``

- ``train`` / ``validation``: tfds ``imagenet2012:5.1.0`` from the manual downloads
  ``DIR/downloads/manual/ILSVRC2012_img_train.tar`` and ``ILSVRC2012_img_val.tar``
  (register at image-net.org); writes ``DIR/imagenet2012/5.1.0/`` (about 145 GB).
- ``test``: tfds ``imagenet_v2/matched-frequency:3.0.0`` (10,000 images, 1.2 GB download,
  needs network once; the URL and sha256 come from tfds's own ``checksums.tsv``).

Why the patching: tfds's ImageNet builders and its tar extractor call TensorFlow's file API
(``tf.io.gfile``) for plain local files; this project does not install TensorFlow, so those
calls are answered with the standard library (``os``/``open``) while tfds's own builder
code does the rest (label mapping, CMYK/PNG fixes, shuffling, sharding). The v2 archive is
fetched and unpacked with the standard library for the same reason.
"""

import argparse
import contextlib
import hashlib
import os
import shutil
import tarfile
import types
import urllib.request
from pathlib import Path
from unittest import mock

from workloads.base import default_data_dir
from workloads.imagenet.tfds_source import (
    IMAGENET,
    IMAGENET_V2,
    MANUAL_TARS,
    manual_dir,
    missing_message,
    variant_dir,
)

V2_ARCHIVE = "imagenetv2-matched-frequency.tar.gz"


def _gfile_shim() -> types.SimpleNamespace:
    gfile = types.SimpleNamespace(
        exists=os.path.exists,
        listdir=os.listdir,
        GFile=lambda path, mode="r": open(path, mode),  # noqa: SIM115 (a file factory)
    )
    compat = types.SimpleNamespace(as_text=lambda s: s.decode() if isinstance(s, bytes) else s)
    return types.SimpleNamespace(io=types.SimpleNamespace(gfile=gfile), compat=compat)


@contextlib.contextmanager
def without_tensorflow():
    """Answers tfds's ``tf.io.gfile`` calls in the ImageNet builders with the stdlib."""
    from tensorflow_datasets.core.download import extractor
    from tensorflow_datasets.datasets.imagenet2012 import (
        imagenet2012_dataset_builder,
        imagenet_common,
    )
    from tensorflow_datasets.datasets.imagenet_v2 import imagenet_v2_dataset_builder

    shim = _gfile_shim()
    modules = (extractor, imagenet2012_dataset_builder, imagenet_common,
               imagenet_v2_dataset_builder)  # fmt: skip
    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.enter_context(mock.patch.object(module, "tf", shim))
        yield


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def v2_source() -> tuple[str, str]:
    """``(url, sha256)`` of the matched-frequency archive, from tfds's checksums file."""
    import tensorflow_datasets as tfds

    checksums = tfds.core.tfds_path("datasets/imagenet_v2/checksums.tsv").read_text()
    for line in checksums.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[0].endswith("/" + V2_ARCHIVE):
            return fields[0], fields[2]
    raise ValueError(f"tfds's imagenet_v2 checksums.tsv lists no {V2_ARCHIVE}")


def fetch_v2(download_dir: Path, archive: Path | None = None) -> Path:
    """Downloads (unless given), checks and unpacks the v2 archive; returns the folder."""
    url, sha256 = v2_source()
    download_dir.mkdir(parents=True, exist_ok=True)
    if archive is None:
        archive = download_dir / V2_ARCHIVE
        if not archive.exists():
            partial = archive.with_name(archive.name + ".partial")
            print(f"downloading {url} -> {archive}")
            with urllib.request.urlopen(url) as response, partial.open("wb") as out:
                shutil.copyfileobj(response, out)
            os.replace(partial, archive)
    if _sha256(archive) != sha256:
        raise ValueError(f"{archive} has the wrong sha256; delete it and download it again.")
    extracted = download_dir / "imagenet_v2_extracted"
    if not extracted.is_dir():
        tmp = download_dir / "imagenet_v2_extracted.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        os.replace(tmp, extracted)
    return extracted


def prepare_imagenet2012(data_dir: Path) -> None:
    """tfds ``download_and_prepare`` (array_record) from the manual tars."""
    import tensorflow_datasets as tfds

    if not all((manual_dir(data_dir) / t).is_file() for t in MANUAL_TARS):
        raise FileNotFoundError(missing_message(data_dir, "train"))
    name, version = IMAGENET
    builder = tfds.builder(f"{name}:{version}", data_dir=os.fspath(data_dir))
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir(data_dir)))
    with without_tensorflow():
        builder.download_and_prepare(file_format="array_record", download_config=config)


def prepare_imagenet_v2(data_dir: Path, extracted: Path) -> None:
    """tfds ``download_and_prepare`` (array_record) from the unpacked v2 archive."""
    import tensorflow_datasets as tfds
    from etils import epath

    name, version = IMAGENET_V2
    builder = tfds.builder(f"{name}:{version}", data_dir=os.fspath(data_dir))
    with (
        without_tensorflow(),
        mock.patch.object(
            tfds.download.DownloadManager,
            "download_and_extract",
            return_value=epath.Path(extracted),
        ),
    ):
        builder.download_and_prepare(file_format="array_record")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data_dir",
        default=default_data_dir(),
        help="root data directory (the workload's data_dir)",
    )
    parser.add_argument(
        "--splits", nargs="+", default=["train", "validation", "test"],
        choices=["train", "validation", "test"],
    )  # fmt: skip
    parser.add_argument("--v2_archive", default=None, help=f"a local copy of {V2_ARCHIVE}")
    args = parser.parse_args()
    data_dir = Path(args.data_dir).expanduser()
    try:
        if {"train", "validation"} & set(args.splits):
            prepare_imagenet2012(data_dir)
            print(f"imagenet2012 prepared under {variant_dir(data_dir, IMAGENET)}")
        if "test" in args.splits:
            archive = Path(args.v2_archive).expanduser() if args.v2_archive else None
            extracted = fetch_v2(data_dir / "downloads" / "imagenet_v2", archive)
            prepare_imagenet_v2(data_dir, extracted)
            print(f"imagenet_v2 prepared under {variant_dir(data_dir, IMAGENET_V2)}")
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
