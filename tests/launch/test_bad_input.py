"""Bad input through the real entry point (``launch/train.py``'s ``cli``): one line naming the
problem and the fix (with the valid choices where there is a list), exit code 2, no
traceback, and nothing half-written in the run directory.

The table runs in-process (``cli(argv)`` is exactly what ``python launch/train.py ARGV`` runs,
Hydra included; a Python start-up per case would cost ~5 s on 2 cores); three cases also
run as real subprocesses.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import MINI_MOLECULES, ROOT, compose_config, run_cli
from hydra.core.global_hydra import GlobalHydra

import launch.validation
from launch.train import cli, run

OPTIMIZERS = "adam, kradagrad, kradagrad_star, sgd, shampoo, sketchy"
WORKLOADS = sorted(p.stem for p in (ROOT / "configs" / "workload").glob("*.yaml"))


def tree(path: Path) -> dict[str, int] | None:
    """``{relative path: size}`` of everything under ``path`` (None: no such directory)."""
    if not path.is_dir():
        return None
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def prepared(data_dir):
    """The shared mini data, prepared beforehand (its progress bar is not the run's output)."""
    from workloads.ogbg_molpcba import mini_dataset

    mini_dataset.prepare(data_dir, MINI_MOLECULES, progress=False)
    return data_dir


@pytest.fixture(scope="module")
def corrupt_caches(data_dir, tmp_path_factory):
    """Two data dirs whose mini ogbg cache is garbage / truncated (the shared one is kept)."""
    from workloads.ogbg_molpcba import mini_dataset

    good = mini_dataset.prepare(data_dir, MINI_MOLECULES, progress=False)
    out = {}
    for kind in ("garbage", "truncated"):
        d = tmp_path_factory.mktemp(kind)
        bad = mini_dataset.cache_path(d, MINI_MOLECULES)
        bad.parent.mkdir(parents=True)
        data = good.read_bytes()
        bad.write_bytes(os.urandom(4096) if kind == "garbage" else data[: len(data) // 2])
        out[kind] = d
    return out


@pytest.fixture(scope="module")
def adam_run_dir(data_dir, tmp_path_factory):
    """A run directory holding a 1-step checkpoint of the smoke GNN under Adam. (The same
    train step as test_disk_full_during_the_run_is_one_line's: constant schedule, so the
    number of steps is not in the program; the second of the two compiles is a hit of the
    persistent compilation cache of tests/conftest.py.)"""
    run_dir = tmp_path_factory.mktemp("adam_run") / "run"
    overrides = [
        "debug=smoke",
        f"workload.data_dir={data_dir}",
        f"workload.max_molecules={MINI_MOLECULES}",
        f"run_dir={run_dir}",
        "optimizer=adam",
        "schedule=constant",
        "trainer.steps=1",
        "trainer.spectra_every=0",
    ]
    run(compose_config(overrides))
    return run_dir


# (id, overrides, substrings of the error line); "{tmp}": the case's tmp_path.
CASES = [
    ("negative_steps", ["trainer.steps=-5"], ["trainer.steps=-5", ">= 1", "trainer.steps=1000"]),
    (
        "negative_learning_rate",
        ["optimizer.learning_rate=-1"],
        ["optimizer.learning_rate=-1", "(0, inf)", "optimizer.learning_rate=0.001"],
    ),
    ("run_dir_is_a_file", ["run_dir={tmp}/afile"], ["run_dir=", "is an existing file"]),
    ("unknown_optimizer", ["optimizer=nope"], ["optimizer=nope", OPTIMIZERS]),
    ("unknown_workload", ["workload=nope"], ["workload=nope", ", ".join(WORKLOADS)]),
    ("unknown_experiment", ["experiment=nope"], ["experiment=nope", "laptop"]),
    ("b1_too_large", ["optimizer.b1=1.5"], ["optimizer.b1=1.5", "[0, 1)"]),
    ("b2_zero", ["optimizer.b2=0"], ["optimizer.b2=0", "(0, 1]"]),
    ("adam_b2_negative", ["optimizer=adam", "optimizer.b2=-0.5"], ["optimizer.b2=-0.5"]),
    ("eps_negative", ["optimizer.eps=-1e-6"], ["optimizer.eps=-1e-06", "[0, inf)"]),
    (
        "weight_decay_negative",
        ["optimizer=shampoo", "optimizer.weight_decay=-0.1"],
        ["optimizer.weight_decay=-0.1", "[0, inf)"],
    ),
    ("update_freq_zero", ["optimizer.update_freq=0"], ["optimizer.update_freq=0", ">= 1"]),
    ("update_freq_fraction", ["optimizer.update_freq=2.5"], ["not an integer"]),
    ("block_size_text", ["optimizer.block_size=big"], ["optimizer.block_size='big'", "integer"]),
    ("rank_zero", ["rank=0"], ["rank=0", ">= 1"]),
    ("seed_text", ["seed=abc"], ["seed='abc'", "not an integer"]),
    ("steps_text", ["trainer.steps=ten"], ["trainer.steps='ten'", "not an integer"]),
    ("learning_rate_text", ["optimizer.learning_rate=fast"], ["'fast' is not a number"]),
    ("keep_zero", ["trainer.keep_checkpoints=0"], ["trainer.keep_checkpoints=0"]),
    ("unknown_key", ["trainer.stepz=5"], ["trainer.stepz", "+trainer.stepz=5"]),
    ("unparsable", ["trainer.steps=[1,"], ["cannot parse", "KEY=VALUE"]),
    (
        "batch_not_divisible",
        ["mesh.axes.data=8", "trainer.batch_size=12"],
        ["trainer.batch_size=12", "8 devices", "multiple of 8"],
    ),
    ("mesh_too_large", ["mesh.axes.data=16"], ["needs 16 devices but 8", "mesh.axes.data=-1"]),
    ("mesh_text", ["mesh.axes.data=all"], ["mesh.axes.data='all'", "mesh.axes.data=-1"]),
    (
        "missing_data",
        ["workload.data=tfds", "workload.data_dir={tmp}/empty"],
        ["ogbg_molpcba", "prepare_tfds"],
    ),
    (
        "corrupt_cache",
        ["workload.data_dir={garbage}"],
        ["v1_300.npz", "corrupt or truncated", "delete it"],
    ),
    (
        "truncated_cache",
        ["workload.data_dir={truncated}"],
        ["v1_300.npz", "corrupt or truncated", "delete it"],
    ),
    (
        "unknown_split",
        ["trainer.final_splits=[validation,nope]"],
        ["trainer.final_splits", "'nope'", "'train', 'validation', 'test'"],
    ),
    (
        "checkpoint_of_another_optimizer",
        ["run_dir={adam_run}", "optimizer=sketchy", "rank=8"],
        ["different optimizer", "new run_dir"],
    ),
    (
        "checkpoint_of_another_model",
        ["run_dir={adam_run}", "optimizer=adam", "workload.latent_dim=8"],
        ["different model", "new run_dir"],
    ),
    ("unwritable_run_dir", ["run_dir={tmp}/afile/run"], ["is not writable", "run_dir="]),
    ("full_disk", ["FULL_DISK"], ["MiB free", "trainer.keep_checkpoints"]),
]


def invoke(argv: list[str], capfd) -> tuple[int, str, str]:
    """``python launch/train.py ARGV`` in-process: (exit code, stdout, stderr)."""
    GlobalHydra.instance().clear()
    saved = sys.argv
    # Hydra's logging setup would keep handlers on pytest's captured (later closed) streams.
    argv = [*argv, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    try:
        cli(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()
    out, err = capfd.readouterr()
    return code, out, err


def assert_one_line(code: int, out: str, err: str, expected: list[str]):
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1, lines
    assert "Traceback" not in err and lines[0].startswith("error: "), lines
    for text in expected:
        assert text in lines[0], (text, lines[0])


@pytest.mark.parametrize("case_id,overrides,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(
    case_id, overrides, expected, prepared, tmp_path, capfd, monkeypatch, request
):
    data_dir = prepared
    (tmp_path / "afile").write_text("not a directory\n")
    subs = {"tmp": tmp_path}
    if any("{garbage}" in o or "{truncated}" in o for o in overrides):
        subs |= request.getfixturevalue("corrupt_caches")
    if any("{adam_run}" in o for o in overrides):
        subs["adam_run"] = request.getfixturevalue("adam_run_dir")
    if "FULL_DISK" in overrides:
        overrides = [o for o in overrides if o != "FULL_DISK"]
        usage = shutil.disk_usage(tmp_path)._replace(free=3 * 2**20)
        monkeypatch.setattr(launch.validation.shutil, "disk_usage", lambda _: usage)
    overrides = [o.format(**subs) for o in overrides]
    run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("run_dir=")), None)
    run_dir = Path(run_dir) if run_dir else tmp_path / "run"
    argv = [
        "debug=smoke",
        f"workload.data_dir={data_dir}",
        f"workload.max_molecules={MINI_MOLECULES}",
        f"run_dir={run_dir}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        *overrides,
    ]
    before = tree(run_dir)
    code, out, err = invoke(argv, capfd)
    assert_one_line(code, out, err, expected)
    # Nothing half-written: the run directory is as it was (absent stays absent), and
    # Hydra's own output directory of the refused run is gone too.
    assert tree(run_dir) == before
    assert not (tmp_path / "hydra").exists()


def rank_argv(data_dir, tmp_path, rank, *extra):
    return [
        "debug=smoke",
        f"workload.data_dir={data_dir}",
        f"workload.max_molecules={MINI_MOLECULES}",
        f"run_dir={tmp_path / f'run{rank}'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        f"rank={rank}",
        "trainer.spectra_every=0",
        *extra,
    ]


def test_rank_above_every_dimension_warns_once(prepared, tmp_path, capfd):
    """Allowed (the sketches are exact), with one warning line that this is Shampoo's memory;
    an ordinary rank gives none. (Stopped by a bad split right after the warning, so that
    nothing compiles; the slow test below trains.)"""
    stop = "trainer.final_splits=[nope]"
    code, out, err = invoke(rank_argv(prepared, tmp_path, 100000, stop), capfd)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 2, lines
    assert lines[0].startswith("warning: rank=100000 is at least every preconditioned")
    assert "Shampoo's statistics memory" in lines[0] and lines[1].startswith("error:")
    code, out, err = invoke(rank_argv(prepared, tmp_path, 8, stop), capfd)
    assert code == 2 and "warning:" not in err, err


@pytest.mark.slow
def test_rank_above_every_dimension_trains(prepared, tmp_path, capfd):
    code, out, err = invoke(rank_argv(prepared, tmp_path, 100000, "trainer.steps=2"), capfd)
    assert code == 0, err
    assert len([line for line in err.splitlines() if line.startswith("warning:")]) == 1
    assert (tmp_path / "run100000" / "checkpoints").is_dir()


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["trainer.steps=-5"], "trainer.steps=-5"),
        (["optimizer=nope"], OPTIMIZERS),
    ],
    ids=["negative_steps", "unknown_optimizer"],
)
def test_bad_input_subprocess(overrides, expected, prepared, tmp_path):
    data_dir = prepared
    """The same through a real ``python launch/train.py`` process: exit status 2."""
    out = run_cli(
        [
            "debug=smoke",
            f"workload.data_dir={data_dir}",
            f"workload.max_molecules={MINI_MOLECULES}",
            f"run_dir={tmp_path / 'run'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            *overrides,
        ]
    )
    assert_one_line(out.returncode, out.stdout, out.stderr, [expected])
    assert not (tmp_path / "run").exists() and not (tmp_path / "hydra").exists()


def test_disk_full_during_the_run_is_one_line(prepared, tmp_path, capfd, monkeypatch):
    """ENOSPC from a checkpoint write mid-run: one line, exit 2, earlier checkpoints kept."""
    import errno

    from launch.checkpointing import Checkpointer

    real = Checkpointer.save

    def save(self, step, *args, **kwargs):
        if step >= 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory))
        return real(self, step, *args, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", save)
    run_dir = tmp_path / "run"
    argv = [
        "debug=smoke",
        f"workload.data_dir={prepared}",
        f"workload.max_molecules={MINI_MOLECULES}",
        f"run_dir={run_dir}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "optimizer=adam",
        "schedule=constant",  # the train step of the adam_run_dir fixture: compiled once
        "trainer.checkpoint_every=1",
        "trainer.spectra_every=0",
    ]
    code, out, err = invoke(argv, capfd)
    assert_one_line(code, out, err, ["no space left on the disk", "rerun the same command"])
    assert (run_dir / "checkpoints" / "2").is_dir()
