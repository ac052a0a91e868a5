"""Two processes on localhost, joined through ``jax.distributed.initialize`` (coordinator on
127.0.0.1, a free port), train one run together: 2 CPU devices each, a 4-device ``data``
mesh with the optimizer state split across both processes. They checkpoint, stop, and a
second pair resumes the run; its parameters equal a one-process run on 4 devices.

Bounded: every process gets a deadline, and the test kills whatever is still running
(by process id) before it returns.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from launch.metrics_log import read_metrics

DEADLINE_S = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overrides(run_dir, steps: int) -> list[str]:
    # A constant schedule: a run of 4 steps resumed to 6 is the run of 6 (warmup-cosine would
    # stretch with trainer.steps).
    return ["debug=smoke", "workload=mnist_autoencoder", "workload.size=tiny", "schedule=constant",
            "workload.max_train_examples=256", "optimizer=sketchy", "rank=8",
            f"trainer.steps={steps}", "trainer.checkpoint_every=2", "trainer.log_every=1",
            "trainer.spectra_every=2", "mesh.min_shard_bytes=0", f"run_dir={run_dir}"]  # fmt: skip


def launch(args: list[str], devices: int, log):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "OPENBLAS_NUM_THREADS": "1"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.Popen(
        [sys.executable, str(ROOT / "launch" / "train.py"), *args],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def run_processes(jobs: list[tuple[list[str], int]], tmp_path, tag: str) -> None:
    """Start every job, wait for all (deadline), kill the rest; fail with their logs."""
    procs, logs = [], []
    try:
        for i, (args, devices) in enumerate(jobs):
            logs.append(open(tmp_path / f"{tag}_{i}.log", "w"))  # noqa: SIM115
            hydra_dir = tmp_path / f"hydra_{tag}_{i}"
            procs.append(launch([*args, f"hydra.run.dir={hydra_dir}"], devices, logs[-1]))
        codes = [p.wait(timeout=DEADLINE_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
    text = "\n".join((tmp_path / f"{tag}_{i}.log").read_text()[-2000:] for i in range(len(jobs)))
    assert codes == [0] * len(jobs), text


def two_processes(run_dir, steps: int) -> list[tuple[list[str], int]]:
    port = free_port()
    dist = [f"mesh.coordinator_address=127.0.0.1:{port}", "mesh.num_processes=2"]
    return [([*overrides(run_dir, steps), *dist, f"mesh.process_id={i}"], 2) for i in range(2)]


def curve(run_dir, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in read_metrics(run_dir) if key in r}


@pytest.mark.slow  # four process start-ups and compiles: about 2 minutes on 2 cores
def test_two_processes_train_checkpoint_and_resume(tmp_path):
    together, alone = tmp_path / "together", tmp_path / "alone"
    run_processes(two_processes(together, 4), tmp_path, "first")
    rows = list(read_metrics(together))
    assert max(r["step"] for r in rows) == 4
    static = next(r for r in rows if "mesh/devices" in r)
    assert static["mesh/devices"] == 4 and static["mesh/data"] == 4
    assert static["optimizer/bytes_per_device_vs_replicated"] < 0.5  # split over 2 hosts
    run_processes(two_processes(together, 6), tmp_path, "resume")
    rows = list(read_metrics(together))
    assert any(r.get("resumed_from_step") == 4 for r in rows)
    assert any("spectra/intrinsic_dim_mean" in r for r in rows)  # host_readable factors
    run_processes([(overrides(alone, 6), 4)], tmp_path, "alone")
    # The same trajectory: the loss of every step and the parameter norm after it (a
    # function of every parameter), and the final validation loss.
    for key in ("train/loss", "train/param_norm", "validation/loss"):
        a, b = curve(alone, key), curve(together, key)
        assert a and set(a) <= set(b), (key, a, b)
        np.testing.assert_allclose([b[s] for s in a], list(a.values()), rtol=1e-4, err_msg=key)
