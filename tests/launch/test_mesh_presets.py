"""Mesh presets (``configs/mesh/``): each composes, and each trains a few steps on the 8
virtual CPU devices of ``tests/conftest.py`` with its layout (hardware presets with their
hardware check turned off, ``mesh.expect=null``); the check itself refuses the CPU with one
line, and bad layout settings are one line each."""

import jax
import pytest
from conftest import CONFIGS, compose_config, run_cli

from launch import mesh as mesh_lib
from launch import sharding
from launch.errors import UserError
from launch.metrics_log import read_metrics
from launch.train import run

# What a run on 8 CPU devices overrides: the hardware check, and for the TPU presets
# jax.distributed (on there, to join a slice's hosts).
ON_CPU = {
    "data": [],
    "data_model": [],
    "gpu_8": ["mesh.expect=null"],
    "tpu_v4": ["mesh.expect=null", "mesh.distributed=off"],
    "tpu_v5e": ["mesh.expect=null", "mesh.distributed=off"],
}
# Expected on 8 devices: mesh shape, batch split, and whether parameters are split.
SHAPES = {
    "data": ({"data": 8}, 8, False),
    "data_model": ({"data": 4, "model": 2}, 8, True),
    "gpu_8": ({"data": 1, "model": 8}, 8, True),
    "tpu_v4": ({"data": 8}, 8, True),
    "tpu_v5e": ({"data": 8}, 8, True),
}
# `data` trains in test_training_runs.py (sketchy on 8 devices) and data_model here; the
# hardware presets' layouts are those two with other sizes: their runs are `slow`.
FAST = {"data_model"}
RUNS = [p if p in FAST else pytest.param(p, marks=pytest.mark.slow) for p in sorted(ON_CPU)]


def test_every_preset_is_covered():
    assert sorted(p.stem for p in (CONFIGS / "mesh").glob("*.yaml")) == sorted(ON_CPU)


@pytest.mark.parametrize("preset", sorted(ON_CPU))
def test_preset_composes_to_its_layout(preset):
    if jax.device_count() != 8:
        pytest.skip("needs the 8 host devices of tests/conftest.py")
    cfg = compose_config([f"mesh={preset}", *ON_CPU[preset]])
    shape, batch_shards, splits_params = SHAPES[preset]
    mesh = mesh_lib.make_mesh(dict(cfg.mesh.axes))
    assert dict(mesh.shape) == shape
    layout = sharding.layout_of(cfg.mesh, mesh)
    assert sharding.batch_shards(mesh, layout) == batch_shards
    assert bool(layout.param_axes) == splits_params and layout.state_axes


# The tiny autoencoder (784-64-32-16-8 and mirror: few arrays, a quick compile), with
# every array split (its arrays are all under the presets' 256 KiB default).
TINY = ["debug=smoke", "workload=mnist_autoencoder", "workload.size=tiny",
        "workload.max_train_examples=256", "optimizer=sketchy", "rank=8", "trainer.steps=3",
        "trainer.checkpoint_every=3", "trainer.spectra_every=3",
        "mesh.min_shard_bytes=0"]  # fmt: skip


@pytest.mark.parametrize("preset", RUNS)
def test_preset_trains_on_8_cpu_devices(preset, tmp_path):
    if jax.device_count() != 8:
        pytest.skip("needs the 8 host devices of tests/conftest.py")
    overrides = [f"mesh={preset}", *ON_CPU[preset], *TINY, f"run_dir={tmp_path / 'run'}"]
    final = run(compose_config(overrides))
    assert final["step"] == 3
    merged = {}
    for row in read_metrics(tmp_path / "run"):
        merged |= row
    assert merged["mesh/devices"] == 8 and merged["mesh/data"] == SHAPES[preset][1]
    # Each device keeps about 1/8 of the optimizer state (a few small factors stay whole).
    assert merged["optimizer/bytes_per_device_vs_replicated"] < 0.25
    total_param_bytes = 4 * merged["model/num_params"]
    if SHAPES[preset][2]:
        assert merged["model/param_bytes_per_device"] < 0.75 * total_param_bytes
    else:
        assert merged["model/param_bytes_per_device"] == total_param_bytes
    assert "spectra/intrinsic_dim_mean" in merged


@pytest.mark.parametrize(
    ("preset", "words"),
    [
        (
            "gpu_8",
            "mesh=gpu_8 is for gpu devices (a multiple of 8) but this run sees 8 cpu device(s):",
        ),
        ("tpu_v4", "mesh=tpu_v4 is for TPU v4 devices (tpu, a multiple of 4) but"),
        ("tpu_v5e", "mesh=tpu_v5e is for TPU v5 lite devices (tpu) but"),
    ],
)
def test_hardware_presets_refuse_other_hardware(preset, words):
    if jax.device_count() != 8:
        pytest.skip("messages name the 8 host devices of tests/conftest.py")
    cfg = compose_config([f"mesh={preset}"])
    with pytest.raises(UserError, match="mesh.expect=null") as info:
        mesh_lib.check_expected(cfg.mesh.expect, preset)
    assert words in str(info.value)


def test_hardware_preset_mismatch_is_one_line_and_exit_2(tmp_path):
    args = ["debug=smoke", "mesh=gpu_8", f"run_dir={tmp_path / 'run'}",
            f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip
    out = run_cli(args, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: mesh=gpu_8 is for"), lines
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["mesh.state_axes=[modle]"], r"names \['modle'\], not an axis of this mesh"),
        (["mesh.batch_axes=[]"], "leaves the batch unsplit"),
        (["mesh.param_axes=[data,data]"], "repeats an axis"),
        (["mesh=data_model", "trainer.batch_size=12"], "8 devices of the mesh's data x model"),
    ],
)
def test_bad_layout_is_one_line(overrides, match, smoke_overrides):
    if jax.device_count() != 8:
        pytest.skip("messages name the 8 host devices of tests/conftest.py")
    with pytest.raises(UserError, match=match):
        run(compose_config([*smoke_overrides, *overrides]))
