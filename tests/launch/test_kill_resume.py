"""Crash safety: kill -9 at random points (one of them during a checkpoint write), corrupt
checkpoints, files killed mid-write, and run-to-run reproducibility.

Kill points are random; the seed is printed in every failure message (rerun one with
``KILL_SEED=<seed>``).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import MINI_MOLECULES, ROOT, compose_config
from test_checkpoint_corrupt import corrupt

from launch.train import run

STEPS = 24


def common(data_dir, optimizer: str = "sketchy", steps: int = STEPS) -> list[str]:
    extra = ["rank=8", "optimizer.update_freq=3"] if optimizer == "sketchy" else []
    return [
        "debug=smoke",
        f"workload.data_dir={data_dir}",
        f"workload.max_molecules={MINI_MOLECULES}",
        f"optimizer={optimizer}",
        *extra,
        f"trainer.steps={steps}",
        "schedule=constant",  # resumed runs below change trainer.steps
        "trainer.checkpoint_every=1",
        "trainer.keep_checkpoints=3",
        "trainer.log_every=1",
        "trainer.spectra_every=0",
        "trainer.final_splits=[validation]",
    ]


def rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl as written so far (a line being written is skipped)."""
    path = run_dir / "metrics.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def last_trained_step(run_dir: Path) -> int:
    return max((r["step"] for r in rows(run_dir) if "train/loss" in r), default=-1)


def tmp_checkpoints(run_dir: Path) -> list[Path]:
    d = run_dir / "checkpoints"
    return [p for p in d.iterdir() if "tmp" in p.name] if d.is_dir() else []


def saved_steps(run_dir: Path) -> list[int]:
    d = run_dir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def final_state(run_dir: Path, step: int):
    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as mngr:
        return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state


def assert_bit_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and len(la) > 0
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def wait_for(predicate, proc, what: str, timeout: float = 300.0, poll: float = 0.002, log=""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            text = Path(log).read_text()[-3000:] if log else ""
            raise AssertionError(f"run exited ({proc.returncode}) before {what}: {text}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow  # four process starts and compiles: ~2-5 min on a shared 2-core CPU
def test_kill_9_three_times_then_resume_is_bit_exact(data_dir, tmp_path):
    """One run is SIGKILLed three times (after a random step, during a checkpoint write, at a
    random moment) and resumed each time; its final state equals an uninterrupted run's."""
    seed = int(os.environ.get("KILL_SEED", time.time_ns() % 2**31))
    rng = random.Random(seed)
    why = f"(KILL_SEED={seed})"
    reference = tmp_path / "reference"
    run(compose_config([*common(data_dir), f"run_dir={reference}"]))

    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mid_write = False
    kills = ["after_step", "during_checkpoint_write", "random_time"]
    for i, how in enumerate(kills):
        before = last_trained_step(run_dir)
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "launch" / "train.py"),
                *common(data_dir),
                f"run_dir={run_dir}",
                f"hydra.run.dir={tmp_path / f'hydra{i}'}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"stderr{i}.txt").open("w"),
        )
        try:
            # Resumed and trained at least one new step (the compile is behind us).
            wait_for(
                lambda b=before: last_trained_step(run_dir) > b,
                proc,
                f"training {why}",
                log=tmp_path / f"stderr{i}.txt",
            )
            if how == "after_step":
                target = last_trained_step(run_dir) + rng.randint(1, 8)
                wait_for(lambda t=target: last_trained_step(run_dir) >= t, proc, f"step {target}")
            elif how == "during_checkpoint_write":
                time.sleep(rng.uniform(0.0, 0.3))
                wait_for(lambda: tmp_checkpoints(run_dir), proc, f"a checkpoint write {why}")
            else:
                time.sleep(rng.uniform(0.0, 1.5))
            assert proc.poll() is None, f"the run finished before kill {i + 1} {why}"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if how == "during_checkpoint_write":
            mid_write = bool(tmp_checkpoints(run_dir))
        assert proc.returncode == -signal.SIGKILL
        assert last_trained_step(run_dir) < STEPS, why

    final = run(compose_config([*common(data_dir), f"run_dir={run_dir}"]))
    assert final["step"] == STEPS, why
    assert mid_write, f"the second kill did not land during a checkpoint write {why}"
    resumed = [r["resumed_from_step"] for r in rows(run_dir) if "resumed_from_step" in r]
    assert len(resumed) >= 3, (resumed, why)  # every restart resumed from a checkpoint
    a, b = final_state(reference, STEPS), final_state(run_dir, STEPS)
    assert_bit_equal(a["params"], b["params"])
    assert_bit_equal(a["opt_state"], b["opt_state"])
    assert not tmp_checkpoints(run_dir) or saved_steps(run_dir)[-1] == STEPS


@pytest.fixture(scope="module")
def straight_adam_run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    run(compose_config([*common(data_dir, "adam", steps=6), f"run_dir={run_dir}"]))
    return run_dir


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("truncate", marks=pytest.mark.slow),
        pytest.param("garbage", marks=pytest.mark.slow),
        pytest.param("state_truncate", marks=pytest.mark.slow),
        pytest.param("state_garbage", marks=pytest.mark.slow),
        # One flipped bit in the arrays, caught by the checksum: through the trainer `slow`
        # too (~1 min); test_checkpoint_corrupt.py checks every case in-process in seconds.
        pytest.param("state_flip", marks=pytest.mark.slow),
    ],
)
def test_corrupt_newest_checkpoint_falls_back_with_one_warning(
    how, data_dir, tmp_path, capfd, straight_adam_run
):
    """The newest checkpoint's files truncated or overwritten with garbage: the run warns
    once, sets that checkpoint aside, resumes from the previous one and ends where an
    uninterrupted run ends."""
    base = [*common(data_dir, "adam", steps=4), "trainer.keep_checkpoints=3"]
    run_dir, reference = tmp_path / "run", straight_adam_run
    run(compose_config([*base, f"run_dir={run_dir}"]))
    assert saved_steps(run_dir) == [2, 3, 4]
    corrupt(run_dir / "checkpoints" / "4", how)
    capfd.readouterr()
    final = run(compose_config([*base, "trainer.steps=6", f"run_dir={run_dir}"]))
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "checkpoint step 4" in warnings[0], err
    assert "falling back to the previous checkpoint" in warnings[0]
    assert final["step"] == 6
    assert [r["resumed_from_step"] for r in rows(run_dir) if "resumed_from_step" in r] == [3]
    assert list((run_dir / "checkpoints_corrupt").iterdir())  # kept for inspection
    assert_bit_equal(final_state(reference, 6)["params"], final_state(run_dir, 6)["params"])


@pytest.mark.slow
def test_all_checkpoints_corrupt_is_one_line(data_dir, tmp_path):
    from launch.errors import UserError

    base = [*common(data_dir, "adam", steps=3), "trainer.keep_checkpoints=2"]
    run_dir = tmp_path / "run"
    run(compose_config([*base, f"run_dir={run_dir}"]))
    for step in saved_steps(run_dir):
        corrupt(run_dir / "checkpoints" / str(step), "garbage")
    with pytest.raises(UserError, match="no checkpoint in .* could be restored"):
        run(compose_config([*base, "trainer.steps=5", f"run_dir={run_dir}"]))


# ---- atomic files ----------------------------------------------------------------------

_WRITER = """
import os, sys, time
from launch import atomic
os.fsync = lambda fd: time.sleep(60)  # a slow disk: the kill lands inside the write
atomic.write_json(sys.argv[1], {"value": "new", "pad": "x" * 100000})
"""


def test_killed_atomic_write_leaves_the_old_file_whole(tmp_path):
    """A process killed inside ``write_json`` leaves the previous complete file (readable by
    the next step) and only a hidden temp file that readers' ``*.json`` globs skip."""
    from launch.atomic import write_json

    target = tmp_path / "records" / "run.json"
    write_json(target, {"value": "old"})
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(lambda: list(target.parent.glob(".run.json.*.tmp")), proc, "the temp file")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert json.loads(target.read_text()) == {"value": "old"}
    assert [p.name for p in target.parent.glob("*.json")] == ["run.json"]


def test_atomic_files_get_the_umask_mode(tmp_path):
    """Readable by collaborators like any file the user writes: 0o666 minus the umask (not
    mkstemp's 0o600); an existing file keeps its mode."""
    from launch.atomic import write_text

    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "config.yaml", "a: 1\n")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o002)
        assert write_text(tmp_path / "other.yaml", "a: 1\n").stat().st_mode & 0o777 == 0o664
        path.chmod(0o600)
        assert write_text(path, "a: 2\n").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# ---- reproducibility -------------------------------------------------------------------

# Keys that measure time or memory rather than the computation.
_TIMING = ("perf/", "compile_time_s", "eval_time_s", "device/")


def numeric_rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not any(t in k for t in _TIMING)} for r in rows(run_dir)]


@pytest.mark.slow  # two process starts with data preparation: ~2.5 min on 2 shared cores
def test_two_fresh_runs_give_identical_metrics(tmp_path):
    """`make train` in miniature, twice, as a new user would: each in its own process, with
    its own freshly prepared data (and a different hash seed); every metric is identical."""
    runs = []
    for i in range(2):
        run_dir = tmp_path / f"run{i}"
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "launch" / "train.py"),
                "experiment=laptop",
                f"workload.data_dir={tmp_path / f'data{i}'}",
                f"workload.max_molecules={MINI_MOLECULES}",
                "trainer.steps=24",
                "trainer.eval_every=12",
                "trainer.checkpoint_every=12",
                "trainer.spectra_every=12",
                "trainer.log_every=4",
                "trainer.progress_bar=false",
                "record_dir=null",
                f"run_dir={run_dir}",
                f"hydra.run.dir={tmp_path / f'hydra{i}'}",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": str(i + 1)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(numeric_rows(run_dir))
    assert len(runs[0]) > 5 and any("test/mean_average_precision" in r for r in runs[0])
    assert runs[0] == runs[1]
