"""The trainer's first read of the data: every failure turned into one line before anything
is written (missing or corrupt files, unknown split names)."""

import itertools
from collections.abc import Callable

from launch import validation
from launch.errors import UserError


def data_stage(workload, what: str, fn: Callable):
    """``fn()`` (the first read of the data), with a corrupt data file or a bad split name
    turned into one line (``UserError``) naming the file or the setting and the fix."""
    try:
        return fn()
    except (UserError, FileNotFoundError):
        raise
    except Exception as e:
        path = validation.data_file_of(e, [getattr(workload, "data_dir", None)])
        if path is not None:
            raise UserError(
                f"the data file {path} is unreadable, probably corrupt or truncated "
                f"({type(e).__name__}: {validation.one_line(e)[:200]}): delete it and rerun "
                f"(a mini dataset is prepared again), or point workload.data_dir at a good copy"
            ) from e
        if isinstance(e, ValueError | KeyError):
            raise UserError(f"{what}: {validation.one_line(e)}") from e
        raise


def first_batch(workload, tcfg, seed: int, n_data: int, start: int):
    """The train iterator with its first batch read, and every evaluation split opened:
    missing or corrupt data and unknown splits fail here, before anything is written."""
    data = data_stage(
        workload,
        "the training data",
        lambda: workload.batches(
            "train", tcfg.batch_size, seed=seed, num_shards=n_data, start_step=start
        ),
    )
    first = data_stage(workload, "the training data", lambda: next(iter(data)))
    splits = dict.fromkeys([*tcfg.eval_splits, *tcfg.final_splits])
    for split in splits:
        setting = "trainer.eval_splits" if split in tcfg.eval_splits else "trainer.final_splits"
        data_stage(
            workload,
            f"{setting} has {split!r}",
            lambda split=split: next(
                iter(workload.batches(split, tcfg.eval_batch_size, seed=seed, num_shards=n_data)),
                None,
            ),
        )
    return itertools.chain([first], data)
