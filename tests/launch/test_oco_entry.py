"""launch/oco.py at toy size: both protocols from the real configs, the records they write
(the one record schema) and the table made from them; the command line's one-line errors."""

import json
import subprocess
import sys

import jax
import pytest
from conftest import ROOT

from results.plots import oco_appendix_a

TOY = [
    "problem=[breast_cancer,observation2]",
    "optimizer=[ogd,ada_fd]",
    "sketch_ranks=[2]",
    "sweep.lr.num=3",
    "sweep.lr7.num=2",
    "sweep.delta7.num=2",
    "sweep.wide_lr7.num=2",
    "sweep.wide_delta7.num=2",
    "problem.observation2.seeds=2",
    "problem.observation2.max_horizon=128",
    "problem.observation2.num_horizons=2",
    "problem.observation2.sketch_ranks=[3]",
]


def oco(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "launch" / "oco.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_in_process(overrides: list[str]):
    """``launch.oco.run`` on the composed config (in-process: no second JAX start-up)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from launch import oco as oco_entry

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(oco_entry.CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    x64 = jax.config.jax_enable_x64
    try:
        return oco_entry.run(cfg)
    finally:
        jax.config.update("jax_enable_x64", x64)  # run() turns it on for its float64 runs


def test_toy_run_writes_records_and_the_table(tmp_path):
    records = tmp_path / "records"
    run_in_process([*TOY, f"out_dir={records / 'oco'}"])
    names = sorted(p.stem for p in (records / "oco").glob("*.json"))
    assert names == [
        "breast_cancer__ada_fd__rank2",
        "breast_cancer__ogd__full",
        "observation2__ada_fd__rank3__appendix_a",
        "observation2__ada_fd__rank3__wide",
        "observation2__ogd__full__appendix_a",
    ]
    rec = json.loads((records / "oco" / "breast_cancer__ada_fd__rank2.json").read_text())
    assert len(rec["grid"]["final_log_loss"]) == 4  # 2 learning rates x 2 deltas
    assert set(rec["best_hparams"]) == {"learning_rate", "delta"}
    assert 0 < rec["final"]["log_loss"] < 1 and rec["data"]["features"] == 30
    for key in ("config", "hardware", "versions", "finished_at", "wall_time_s"):
        assert key in rec
    regret = json.loads((records / "oco" / "observation2__ogd__full__appendix_a.json").read_text())
    assert regret["horizons"] == [64, 128] and regret["instance"]["seeds"] == 2
    paths = oco_appendix_a.make(records, tmp_path / "out")
    assert "oco_appendix_a.md" in {p.name for p in paths}


def test_missing_libsvm_file_is_reported_before_anything_is_written(tmp_path):
    """In-process (the CLI reports it as one line, exit 2, through launch.train.report)."""
    from launch import oco as oco_entry
    from launch.validation import one_line

    overrides = ["problem=[a9a]", f"libsvm_dir={tmp_path}", f"out_dir={tmp_path / 'oco'}"]
    with pytest.raises(oco_entry.REPORTED) as err:
        run_in_process(overrides)
    message = one_line(err.value)
    assert "LIBSVM file not found" in message and "a9a" in message and "libsvmtools" in message
    assert not (tmp_path / "oco").exists()


def test_unknown_problem_is_one_line():
    proc = oco("problem=[digits,nope]")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "problem=nope is not an option" in proc.stderr
    assert "configs/oco/problem/" in proc.stderr
