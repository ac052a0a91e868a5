"""Prepares the real tfds ``ogbg_molpcba`` in the ``array_record`` format.

Usage: ``python -m workloads.ogbg_molpcba.prepare_tfds --data_dir DIR [--pcba_zip PATH]``

Downloads OGB's ``pcba.zip`` (39.5 MB, needs network; or give a copy with ``--pcba_zip``),
checks its sha256 against tfds's checksum, extracts it, and runs tfds's
``download_and_prepare(file_format="array_record")``, which writes the train/validation/test
ArrayRecord files under ``DIR/ogbg_molpcba/0.1.3/``. ``tfds.data_source`` then reads them
without TensorFlow; pass the same ``DIR`` as the workload's ``data_dir`` with ``data=tfds``.

Why not let tfds download: its downloader and zip extractor call TensorFlow's file API, and
this project does not install TensorFlow, so we fetch and unzip with the standard library and
hand tfds the extracted folder. tfds itself needs ``importlib_resources`` here.
"""

import argparse
import hashlib
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path
from unittest import mock

from workloads.base import default_data_dir
from workloads.ogbg_molpcba.tfds_source import TFDS_NAME, TFDS_VERSION, variant_dir

PCBA_URL = "https://snap.stanford.edu/ogb/data/graphproppred/csv_mol_download/pcba.zip"
# From tensorflow_datasets/datasets/ogbg_molpcba/checksums.tsv.
PCBA_SHA256 = "0bb12da2f3ec8b0bb80564114a6174fad2df6a3a0d3c19470b3a27813a7d4e53"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_pcba(download_dir: Path, pcba_zip: Path | None = None) -> Path:
    """Downloads (unless given) and extracts ``pcba.zip``; returns the folder holding ``pcba/``."""
    download_dir.mkdir(parents=True, exist_ok=True)
    if pcba_zip is None:
        pcba_zip = download_dir / "pcba.zip"
        if not pcba_zip.exists():
            partial = pcba_zip.with_suffix(".zip.partial")
            print(f"downloading {PCBA_URL} -> {pcba_zip}")
            with urllib.request.urlopen(PCBA_URL) as response, partial.open("wb") as out:
                shutil.copyfileobj(response, out)
            os.replace(partial, pcba_zip)
    if _sha256(pcba_zip) != PCBA_SHA256:
        raise ValueError(f"{pcba_zip} has the wrong sha256; delete it and download it again.")
    extracted = download_dir / "pcba_extracted"
    if not (extracted / "pcba" / "raw").is_dir():
        tmp = download_dir / "pcba_extracted.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(pcba_zip) as archive:
            archive.extractall(tmp)
        shutil.rmtree(extracted, ignore_errors=True)
        os.replace(tmp, extracted)
    return extracted


def prepare_from_extracted(data_dir: str | os.PathLike, extracted: Path) -> None:
    """Runs tfds ``download_and_prepare`` (array_record) on an extracted ``pcba`` folder."""
    try:
        import importlib_resources  # noqa: F401  (tfds's builders need it to prepare)
    except ImportError as err:
        raise ImportError(
            "Preparing tfds ogbg_molpcba needs the PyPI package importlib_resources: "
            "`pip install importlib_resources==7.1.0`."
        ) from err
    import tensorflow_datasets as tfds
    from etils import epath

    builder = tfds.builder(f"{TFDS_NAME}:{TFDS_VERSION}", data_dir=os.fspath(data_dir))
    # The builder's only download is pcba.zip; answer it with the folder extracted above.
    with mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", return_value=epath.Path(extracted)
    ):
        builder.download_and_prepare(file_format="array_record")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data_dir",
        default=default_data_dir(),
        help="root data directory (the workload's data_dir)",
    )
    parser.add_argument("--pcba_zip", default=None, help="a local copy of OGB's pcba.zip")
    args = parser.parse_args()
    data_dir = Path(args.data_dir).expanduser()
    pcba_zip = Path(args.pcba_zip).expanduser() if args.pcba_zip else None
    extracted = fetch_pcba(data_dir / "downloads" / "ogbg_molpcba", pcba_zip)
    prepare_from_extracted(data_dir, extracted)
    print(f"ogbg_molpcba prepared under {variant_dir(data_dir)}")


if __name__ == "__main__":
    main()
