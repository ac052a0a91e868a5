"""End-to-end trainer runs on the tiny ogbg_molpcba preset (real mini data, real optimizers)."""

import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import yaml
from conftest import compose_config, run_cli

from launch.errors import UserError
from launch.metrics_log import read_metrics
from launch.train import run

OPTIMIZERS = ["adam", "shampoo", "sketchy", "kradagrad", "kradagrad_star"]
# Trained elsewhere: sgd by test_nonfinite.py::test_nonfinite_stop_through_the_cli_exits_3.
TRAINED_ELSEWHERE = ["sgd"]
CONFIGS = Path(__file__).parents[2] / "configs" / "optimizer"
# One device for every optimizer; the 8-device mesh once (Sketchy, the paper's optimizer:
# its sketches and grafts are replicated state like every other optimizer's). The other
# optimizers on 8 devices are `slow`: the sharding itself is checked by
# test_multidevice.py (batch on `data`, parameters equal to the 1-device run's).
# KrADagrad and KrADagrad* on one device are `slow` too: their math is checked against dense
# references in tests/sketchy/test_kradagrad.py and their configs compose in test_configs.py;
# the trainer path they take is the one every optimizer takes.
FAST = ["adam", "shampoo", "sketchy"]
SMOKE = [(name, 1) if name in FAST else pytest.param(name, 1, marks=pytest.mark.slow)
         for name in OPTIMIZERS] + [("sketchy", 8)]  # fmt: skip
SMOKE += [pytest.param(name, 8, marks=pytest.mark.slow) for name in OPTIMIZERS if name != "sketchy"]


def test_every_optimizer_config_is_smoke_tested():
    """A deleted (or renamed) optimizer config fails here instead of shrinking the smoke
    parametrization, and a new config must join OPTIMIZERS."""
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(OPTIMIZERS + TRAINED_ELSEWHERE)


def metrics_of(run_dir: Path) -> dict:
    merged = {}
    for row in read_metrics(run_dir):
        merged |= row
    return merged


@pytest.mark.parametrize(("optimizer", "devices"), SMOKE)
def test_smoke_every_optimizer(optimizer, devices, smoke_overrides, tmp_path):
    overrides = [*smoke_overrides, f"optimizer={optimizer}", "rank=8", f"mesh.axes.data={devices}"]
    if optimizer in ("shampoo", "sketchy"):  # Fig. 3's first-layer share (paper: left panel)
        overrides.append("trainer.spectra_first_layer=\"['node_embedding']['kernel']\"")
    final = run(compose_config(overrides))
    assert np.isfinite(final["validation/loss"])
    m = metrics_of(tmp_path / "run")
    assert m["mesh/data"] == devices
    assert np.isfinite(m["train/loss"]) and m["perf/step_time_s"] > 0
    assert m["optimizer/bytes_total"] > 0
    if optimizer in ("shampoo", "sketchy"):
        assert m["optimizer/bytes_statistics"] > 0 and "spectra/intrinsic_dim_mean" in m
        assert 0.25 <= m["spectra/first_layer_top_quarter_share"] <= 1.0


def params_of(run_dir: Path, step: int):
    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as mngr:
        restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored.state


def test_resume_is_exact(smoke_overrides, tmp_path):
    """N steps, then resume to 2N == 2N uninterrupted steps (params, opt state, metrics)."""
    common = [o for o in smoke_overrides if not o.startswith("run_dir")]
    common += ["optimizer=sketchy", "rank=8", "schedule=constant", "trainer.checkpoint_every=3"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(compose_config([*common, "trainer.steps=6", f"run_dir={straight}"]))
    run(compose_config([*common, "trainer.steps=3", f"run_dir={resumed}"]))
    final = run(compose_config([*common, "trainer.steps=6", f"run_dir={resumed}"]))
    assert final["step"] == 6
    a, b = params_of(straight, 6), params_of(resumed, 6)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert metrics_of(resumed)["resumed_from_step"] == 3
    loss = lambda d: {r["step"]: r["train/loss"] for r in read_metrics(d) if "train/loss" in r}  # noqa: E731
    assert loss(straight)[6] == loss(resumed)[6]


def test_wandb_offline_run_dir_is_written(smoke_overrides, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run(compose_config([*smoke_overrides, "logger=wandb", "optimizer=adam"]))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_record_is_written(smoke_overrides, tmp_path):
    records = tmp_path / "records"
    final = run(
        compose_config([*smoke_overrides, f"record_dir={records}", "experiment_name=smoke"])
    )
    record = json.loads(Path(final["record"]).read_text())
    assert Path(final["record"]).parent == records / "smoke"
    assert record["final"]["validation/mean_average_precision"] == pytest.approx(
        final["validation/mean_average_precision"]
    )
    assert record["config"]["optimizer"]["_target_"] == "sketchy.sketchy"
    assert record["curves"]["train/loss"] and record["versions"]["jax"] == jax.__version__


def test_batch_not_divisible_by_data_axis(smoke_overrides):
    cfg = compose_config([*smoke_overrides, "trainer.batch_size=12", "mesh.axes.data=8"])
    with pytest.raises(UserError, match="not divisible by the 8 devices"):
        run(cfg)


def test_mesh_larger_than_devices(smoke_overrides):
    with pytest.raises(UserError, match="needs 16 devices but 8 are available"):
        run(compose_config([*smoke_overrides, "mesh.axes.data=16"]))


def test_cli_errors_are_one_line(data_dir, tmp_path):
    missing = run_cli(
        [
            "debug=smoke",
            "workload.data=tfds",
            f"workload.data_dir={tmp_path}",
            f"run_dir={tmp_path / 'r'}",
        ]
    )
    assert missing.returncode == 2
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "ogbg_molpcba" in lines[0]
    unknown = run_cli(["optimizer=nope", f"run_dir={tmp_path / 'r'}"])
    assert unknown.returncode != 0
    assert "sketchy" in unknown.stderr and "shampoo" in unknown.stderr  # lists the choices
    bad = run_cli(
        [
            "debug=smoke",
            "optimizer.rank=0",
            f"workload.data_dir={data_dir}",
            "workload.max_molecules=300",
            f"run_dir={tmp_path / 'r2'}",
        ]
    )
    assert bad.returncode == 2 and "rank must be an integer >= 1" in bad.stderr
    assert not (tmp_path / "r2" / "checkpoints").exists() or not any(
        (tmp_path / "r2" / "checkpoints").iterdir()
    )


def test_multirun_over_two_seeds(data_dir, tmp_path):
    """A Hydra multirun: one run directory per job, each with its own setting. Adam and a
    seed sweep: both jobs run the same compiled step (the seed is data, not program), which
    the smoke runs have put in the persistent compilation cache. (That a swept rank reaches
    the optimizer: test_configs.py::test_rank_reaches_the_optimizer.)"""
    sweep = tmp_path / "sweep"
    out = run_cli(
        [
            "-m",
            "debug=smoke",
            "optimizer=adam",
            "seed=0,1",
            f"workload.data_dir={data_dir}",
            "workload.max_molecules=300",
            f"hydra.sweep.dir={sweep}",
            "run_dir=${hydra:runtime.output_dir}",
        ]
    )
    assert out.returncode == 0, out.stderr[-2000:]
    runs = sorted(p.parent for p in sweep.glob("*/metrics.jsonl"))
    assert len(runs) == 2
    seeds = sorted(yaml.safe_load((r / "config.yaml").read_text())["seed"] for r in runs)
    assert seeds == [0, 1]
    losses = {metrics_of(r)["train/loss"] for r in runs}
    assert len(losses) == 2  # different initializations and batches


def test_compilation_cache_dir_receives_the_compiled_step(data_dir, tmp_path):
    """``trainer.compilation_cache_dir`` (the tests' own JAX_COMPILATION_CACHE_DIR unset
    here): the run leaves its compiled programs there, the training step among them, for
    the next process that compiles the same program."""
    cache = tmp_path / "jax-cache"
    out = run_cli(
        [
            "debug=smoke",
            "optimizer=adam",
            f"workload.data_dir={data_dir}",
            "workload.max_molecules=300",
            f"run_dir={tmp_path / 'run'}",
            f"trainer.compilation_cache_dir={cache}",
        ],
        # (Every program is cached: on a fast machine this step may compile in under JAX's
        # default threshold of 1 s.)
        env={"JAX_COMPILATION_CACHE_DIR": "", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    entries = [p.name for p in cache.iterdir()] if cache.exists() else []
    assert any(name.startswith("jit_train_step") for name in entries), entries


def test_sigterm_saves_and_resumes(data_dir, tmp_path):
    """SIGTERM mid-run: checkpoint, clean exit (rc 0); rerunning resumes from that step."""
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "launch/train.py",
        "debug=smoke",
        "trainer.steps=400",
        "trainer.log_every=1",
        "trainer.checkpoint_every=1000",
        "optimizer=adam",
        "schedule=constant",  # the resumed run (other trainer.steps) reuses the compiled step
        f"workload.data_dir={data_dir}",
        "workload.max_molecules=300",
        f"run_dir={run_dir}",
    ]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        args, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        rows = read_metrics(run_dir)
        if any(r.get("step", 0) >= 3 and "train/loss" in r for r in rows):
            break
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    saved = metrics_of(run_dir)
    assert saved.get("stopped_by_sigterm") == 1
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and 3 <= steps[-1] < 400
    assert (run_dir / "config.yaml").exists()
    again = run_cli(args[2:-1] + [f"run_dir={run_dir}", "trainer.steps=" + str(steps[-1] + 2)])
    assert again.returncode == 0, again.stderr[-2000:]
    assert metrics_of(run_dir)["resumed_from_step"] == steps[-1]
