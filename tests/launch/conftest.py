"""Compose the real Hydra configs in-process, on the tiny ogbg_molpcba preset."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
MINI_MOLECULES = 300  # enough for train/validation/test splits, quick to prepare


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def compose_config(overrides: list[str]):
    """The config `launch/train.py` would see (with the `hydra` node set, then removed)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def smoke_overrides(data_dir, tmp_path):
    """A few tiny steps on the mini dataset subset, writing only under tmp_path."""
    return [
        "debug=smoke",
        f"workload.data_dir={data_dir}",
        f"workload.max_molecules={MINI_MOLECULES}",
        f"run_dir={tmp_path / 'run'}",
    ]


def run_cli(args: list[str], cwd=ROOT, timeout=600, env=None):
    """`python launch/train.py ARGS` in a subprocess (for exit codes and multirun)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "launch" / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
