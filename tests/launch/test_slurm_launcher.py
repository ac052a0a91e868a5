"""``python launch/train.py -m hydra/launcher=slurm rank=64,128,256`` without a cluster:
the real command, with ``srun`` and ``sbatch`` stand-ins on ``PATH``. The stand-in
``sbatch`` keeps the submission script submitit wrote and refuses the job, so the test reads
the generated submission parameters (one array job of 3 tasks, partition, time, nodes,
GPUs, tasks) and the three pickled jobs' overrides, and nothing waits for a queue."""

import os
import stat

import pytest
from conftest import ROOT, run_cli

SBATCH = """#!/bin/sh
cp "$1" "{capture}/"
echo "sbatch: error: this test has no cluster" >&2
exit 1
"""


def executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.tasks_per_node == 4  # one process per GPU follows gpus_per_node
    assert launcher.timeout_min == 240 and launcher.nodes == 1 and launcher.partition is None


def test_sweep_submits_one_array_job_with_one_task_per_point(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import submitit

    bin_dir, capture = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    capture.mkdir()
    executable(bin_dir / "sbatch", SBATCH.format(capture=capture))
    executable(bin_dir / "srun", "#!/bin/sh\nexit 1\n")  # submitit looks for it, never runs it
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=slurm", "rank=64,128,256", "mesh=gpu_8",
            "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90",
            "hydra.launcher.nodes=2", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    out = run_cli(args, env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, timeout=300)
    assert out.returncode != 0 and "this test has no cluster" in out.stderr, out.stderr[-3000:]
    scripts = list(capture.iterdir())
    assert len(scripts) == 1, scripts  # one sbatch call: an array job
    text = scripts[0].read_text()
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --partition=gpu", "#SBATCH --time=90",
                 "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --ntasks-per-node=8", "#SBATCH --cpus-per-task=8"):  # fmt: skip
        assert line in text.splitlines(), (line, text)
    assert "-m submitit.core._submit" in text and "srun " in text
    # The three jobs, pickled for the nodes: the launcher's call with each point's overrides.
    pickles = sorted(sweep.glob(".submitit/**/*.pkl"))
    assert len(pickles) == 3, pickles
    points = set()
    for path in pickles:
        job = submitit.helpers.DelayedSubmission.load(path)
        overrides = job.args[0]
        assert "mesh=gpu_8" in overrides
        points |= {o for o in overrides if o.startswith("rank=")}
    assert points == {"rank=64", "rank=128", "rank=256"}
