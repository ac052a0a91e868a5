"""Prepares the real tfds ``ogbg_molpcba`` in the ``array_record`` format (needs network).

Usage: ``python -m workloads.ogbg_molpcba.prepare_tfds --data_dir DIR``

Downloads ``pcba.zip`` (~40 MB) from snap.stanford.edu and writes the train/validation/test
ArrayRecord files under ``DIR/ogbg_molpcba/0.1.3/``, which ``tfds.data_source`` reads
without TensorFlow. Pass the same ``DIR`` as the workload's ``data_dir`` with ``data=tfds``.
"""

import argparse
import os

from workloads.ogbg_molpcba.tfds_source import TFDS_NAME, TFDS_VERSION, variant_dir


def prepare(data_dir: str | os.PathLike, download_config=None) -> None:
    """Runs tfds ``download_and_prepare`` with ``file_format="array_record"``."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(f"{TFDS_NAME}:{TFDS_VERSION}", data_dir=os.fspath(data_dir))
    builder.download_and_prepare(file_format="array_record", download_config=download_config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data_dir",
        default=os.environ.get("SKETCHY_DATA_DIR", os.path.expanduser("~/.cache/sketchy")),
        help="root data directory (the workload's data_dir)",
    )
    args = parser.parse_args()
    data_dir = os.path.expanduser(args.data_dir)
    prepare(data_dir)
    print(f"ogbg_molpcba prepared under {variant_dir(data_dir)}")


if __name__ == "__main__":
    main()
