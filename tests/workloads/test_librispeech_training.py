"""librispeech through the real trainer (Hydra configs, launch.train.run): a few steps with
sketchy (adam and shampoo: slow), BatchNorm statistics as model state, CLI errors; and,
marked slow, a mini run whose validation WER falls clearly below 1."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from launch.metrics_log import read_metrics
from launch.train import run
from workloads.librispeech import mini_dataset

ROOT = Path(__file__).resolve().parents[2]
UTTERANCES = 40


def compose_config(overrides: list[str]):
    """The config `launch/train.py` would see (as tests/launch/conftest.py builds it)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.getbasetemp() / "librispeech_data"  # shared by test files
    mini_dataset.prepare(data_dir, UTTERANCES, progress=False)
    return data_dir


def smoke(data_dir, run_dir, *extra):
    """A few steps of a one-block Conformer (fast to compile) on 40 mini utterances."""
    return [
        "workload=librispeech",
        "debug=smoke",
        f"workload.data_dir={data_dir}",
        f"workload.max_utterances={UTTERANCES}",
        "workload.num_layers=1",
        "workload.encoder_dim=32",
        "workload.num_heads=2",
        "workload.subsample_channels=8",
        "workload.vocab_size=64",
        "trainer.steps=4",
        "trainer.batch_size=8",
        "trainer.eval_batch_size=8",
        "trainer.checkpoint_every=2",
        "trainer.spectra_every=2",
        "rank=8",
        f"run_dir={run_dir}",
        *extra,
    ]


def state_of(run_dir, step):
    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as mngr:
        restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored.state


# Sketchy's run checks the workload through the trainer (losses, BatchNorm state, spectra,
# memory); Adam and Shampoo through the trainer are the ogbg smoke runs' (test_training_runs.py)
# and cost ~2 min more here on 2 cores: `slow`.
@pytest.mark.parametrize(
    "optimizer",
    [pytest.param("adam", marks=pytest.mark.slow), pytest.param("shampoo", marks=pytest.mark.slow),
     "sketchy"],
)  # fmt: skip
def test_tiny_conformer_trains_with(optimizer, data_dir, tmp_path):
    final = run(compose_config(smoke(data_dir, tmp_path / "run", f"optimizer={optimizer}")))
    assert np.isfinite(final["validation/loss"]) and 0.0 <= final["validation/wer"] <= 5.0
    rows = read_metrics(tmp_path / "run")
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any(r.get("optimizer/bytes_total", 0) > 0 for r in rows)
    if optimizer != "adam":
        assert any("spectra/intrinsic_dim_mean" in r for r in rows)
    stats = state_of(tmp_path / "run", 4)["model_state"]["batch_stats"]
    variances = [np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(stats)
                 if "var" in jax.tree_util.keystr(p)]  # fmt: skip
    assert variances and not np.allclose(variances[0], 1.0)  # running statistics moved


def test_missing_real_data_exits_with_one_line(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "launch/train.py", "workload=librispeech", "debug=smoke",
         "workload.data=npy", f"workload.data_dir={tmp_path}", f"run_dir={tmp_path / 'r'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: LibriSpeech .npy data")
    assert str(tmp_path / "librispeech") in lines[0] and "dataset_setup.py" in lines[0]


@pytest.mark.slow
def test_laptop_experiment_learns_to_recognize_speech(tmp_path):
    """`experiment=librispeech_laptop` on the full mini dataset (prepared under
    $SKETCHY_DATA_DIR when set): validation WER well below 1 (measured 0.427, test 0.442)."""
    # One device, as on a laptop: the test process has 8 host devices (conftest), which the
    # experiment's eval_batch_size (100) does not divide.
    overrides = ["experiment=librispeech_laptop", f"run_dir={tmp_path / 'run'}", "record_dir=null",
                 "mesh.axes.data=1"]  # fmt: skip
    final = run(compose_config(overrides))
    assert final["validation/wer"] < 0.8, final
