"""Toy-size runs of the experiments beyond the paper's three workloads, through the shared
trainer: the KrADagrad quadratic (its experiment config, as a multirun over the tuned
optimizers, and the figure made from its records) and the MNIST autoencoder."""

import json

import jax
import pytest
from conftest import compose_config, run_cli

from launch.train import run as train_run
from results.plots import kradagrad_quadratic


def test_quadratic_experiment_at_toy_size(tmp_path):
    records = tmp_path / "records"
    proc = run_cli(
        [
            "-m",
            "experiment=kradagrad_quadratic",
            "tuned=quadratic_sgd,quadratic_kradagrad",
            "workload.size=8",
            "trainer.steps=4",
            f"record_dir={records}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = sorted(p.name for p in (records / "kradagrad_quadratic").glob("*.json"))
    assert names == ["kradagrad_float32_n8.json", "sgd_float32_n8.json"]
    rec = json.loads((records / "kradagrad_quadratic" / "kradagrad_float32_n8.json").read_text())
    assert rec["config"]["optimizer"]["block_size"] == 8  # no blocking
    assert [s for s, _ in rec["curves"]["train/loss"]] == [1, 2, 3, 4]  # every step
    assert rec["final"]["validation/loss"] > 0
    paths = kradagrad_quadratic.make(records, tmp_path / "out")
    table = (tmp_path / "out" / "tables" / "kradagrad_quadratic.md").read_text()
    assert len(paths) == 2 and "| KrADagrad (float32) | float32 | 0.01 |" in table


def test_quadratic_in_float64(tmp_path):
    """Shampoo in float64 on the quadratic, in-process (the trainer turns 64-bit on)."""
    cfg = compose_config(
        [
            "experiment=kradagrad_quadratic",
            "tuned=quadratic_shampoo",
            "workload.size=6",
            "workload.dtype=float64",
            "trainer.steps=4",
            "record_dir=null",
            f"run_dir={tmp_path / 'run'}",
        ]
    )
    assert cfg.optimizer.dtype == "float64" and cfg.optimizer.block_size == 6
    try:
        final = train_run(cfg)
    finally:
        jax.config.update("jax_enable_x64", False)  # as every other test expects
    assert final["step"] == 4 and 0 < final["validation/loss"] < float("inf")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4]


@pytest.mark.slow  # ~25 s (compiling); the workload and its configs have fast tests
def test_mnist_autoencoder_through_the_trainer(tmp_path):
    cfg = compose_config(
        [
            "debug=smoke",
            "workload=mnist_autoencoder",
            "workload.size=tiny",
            "workload.max_train_examples=64",
            "optimizer=sgd",
            "mesh.axes.data=1",
            "trainer.steps=3",
            "trainer.batch_size=16",
            "trainer.spectra_every=0",
            f"run_dir={tmp_path / 'run'}",
        ]
    )
    final = train_run(cfg)
    assert final["step"] == 3 and final["validation/loss"] > 0
