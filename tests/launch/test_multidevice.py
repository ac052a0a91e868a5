"""Data parallelism on 8 virtual CPU devices: the batch is sharded on ``data``, and the
parameters after a few steps equal those of the 1-device run to float32 rounding.

``tests/conftest.py`` gives every test process 8 host devices
(``--xla_force_host_platform_device_count=8``); where the process has fewer (another
``XLA_FLAGS``), the check reruns in a subprocess that sets the flag.

Tolerance: the two runs differ only in the order of the gradient's sum over the batch
(8 per-device partial sums and an all-reduce against one sum), a relative difference of
a few float32 roundoffs (``u = 6e-8``) in the gradient. Adam's update ``m / (sqrt(v) +
eps)`` keeps a relative error relative (Sketchy, in the slow trainer test, multiplies it
by its preconditioner's condition number, ``< 1e2`` here). After three steps the
parameters (O(1); updates of lr = 1e-2) agree to a few ``u``: ``rtol = 1e-5`` is well
above the measured 1e-7 and far below what a wrong shard (1/8 of the batch, or the batch
counted 8 times) changes, O(1) in the update.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from launch import mesh as mesh_lib
from launch.train_step import init_train_state, train_step

BATCH, STEPS = 16, 3
# Adam keeps this fast test's compilations cheap; the slow trainer test below runs Sketchy.
TX = optax.adam(1e-2)


class ToyWorkload:
    """Least squares ``y ~ relu(x W1) W2`` with the trainer's workload protocol."""

    def init(self, rng):
        k1, k2 = jax.random.split(rng)
        params = {
            "w1": jax.random.normal(k1, (6, 5)) / np.sqrt(6),
            "w2": jax.random.normal(k2, (5, 3)) / np.sqrt(5),
        }
        return params, {}

    def loss(self, params, model_state, batch, *, rng, train):
        del rng, train
        pred = jax.nn.relu(batch["x"] @ params["w1"]) @ params["w2"]
        total = jnp.sum(batch["w"][:, None] * (pred - batch["y"]) ** 2)
        return total, (jnp.sum(batch["w"]), model_state)


def batches():
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        x = rng.standard_normal((BATCH, 6)).astype(np.float32)
        y = rng.standard_normal((BATCH, 3)).astype(np.float32)
        yield {"x": x, "y": y, "w": np.ones(BATCH, np.float32)}


def run(n_devices: int):
    """The trainer's path: mesh, replicated state, batch through put_batch, jitted step."""
    workload = ToyWorkload()
    tx = TX
    mesh = mesh_lib.make_mesh({"data": n_devices})
    repl = mesh_lib.replicated(mesh)
    state = jax.jit(
        lambda rng: init_train_state(workload, tx, rng),
        out_shardings=repl,
    )(jax.random.PRNGKey(0))
    step = jax.jit(lambda s, b: train_step(workload, tx, 1e-2, s, b), out_shardings=(repl, repl))
    compiled, shards = None, None
    for host_batch in batches():
        batch = mesh_lib.put_batch(host_batch, mesh)
        if compiled is None:
            compiled = step.lower(state, batch).compile()  # as the trainer does
            shards = {k: v.addressable_shards for k, v in batch.items()}
            sharding = batch["x"].sharding
            assert isinstance(sharding, NamedSharding)
            assert sharding.spec == PartitionSpec("data")
            assert sharding.mesh.shape["data"] == n_devices
        state, _ = compiled(state, batch)
    params = jax.tree.map(np.asarray, state.params)
    return params, compiled.as_text(), shards


def compare_one_and_eight_devices():
    assert jax.device_count() >= 8, jax.devices()
    one, hlo1, _ = run(1)
    eight, hlo8, shards = run(8)
    # The batch rows are split over the 8 devices, 2 each, together covering all 16.
    for name, arr_shards in shards.items():
        assert len(arr_shards) == 8, name
        assert {s.device for s in arr_shards} == set(jax.devices()[:8])
        rows = sorted(s.index[0].start for s in arr_shards)
        assert rows == list(range(0, BATCH, BATCH // 8)), name
        assert all(s.data.shape[0] == BATCH // 8 for s in arr_shards)
    # Data parallel: the 8-device program sums gradients across devices, the 1-device one
    # has nothing to reduce.
    assert "all-reduce" in hlo8 and "all-reduce" not in hlo1
    start, _ = ToyWorkload().init(jax.random.split(jax.random.PRNGKey(0))[0])
    for name in one:
        moved = np.abs(one[name] - np.asarray(start[name])).max()
        assert moved > 1e-3, name  # the steps did move the parameters
        np.testing.assert_allclose(eight[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_batch_sharded_on_data_and_params_equal_one_device():
    if jax.device_count() >= 8:
        compare_one_and_eight_devices()
        return
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    here = Path(__file__).resolve().parent
    code = (
        f"import sys; sys.path[:0] = [{str(here)!r}, {str(here.parents[1])!r}]; "
        "import test_multidevice as t; t.compare_one_and_eight_devices()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]


def params_of(run_dir: Path):
    import orbax.checkpoint as ocp

    ckpt = (run_dir / "checkpoints").absolute()
    with ocp.CheckpointManager(ckpt) as mngr:
        step = mngr.latest_step()
        restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, restored.state["params"]


@pytest.mark.slow
def test_trainer_eight_devices_equal_one(tmp_path):
    """The whole trainer (mnist_autoencoder, tiny model, Sketchy): 4 steps on a data mesh
    of 8 devices and of 1 give the same parameters (its batches do not depend on the
    number of shards)."""
    from conftest import compose_config

    from launch.train import run as train_run

    if jax.device_count() < 8:
        pytest.skip("needs the 8 host devices of tests/conftest.py")
    finals = {}
    for n in (1, 8):
        run_dir = tmp_path / f"d{n}"
        cfg = compose_config(
            [
                "debug=smoke",
                "workload=mnist_autoencoder",
                "workload.size=tiny",
                "workload.max_train_examples=256",
                "optimizer=sketchy",
                "optimizer.fd_method=svd",
                "rank=8",
                "trainer.steps=4",
                "trainer.eval_batch_size=64",
                f"mesh.axes.data={n}",
                f"run_dir={run_dir}",
            ]
        )
        train_run(cfg)
        finals[n] = params_of(run_dir)
    (s1, p1), (s8, p8) = finals[1], finals[8]
    assert s1 == s8 == 4
    flat1, flat8 = jax.tree.leaves(p1), jax.tree.leaves(p8)
    assert len(flat1) == len(flat8) > 0
    for a, b in zip(flat1, flat8, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- mesh construction
def test_make_mesh_sizes():
    if jax.device_count() < 8:
        pytest.skip("needs the 8 host devices of tests/conftest.py")
    assert dict(mesh_lib.make_mesh({"data": -1}).shape) == {"data": 8}
    assert dict(mesh_lib.make_mesh({"data": 2, "model": -1}).shape) == {"data": 2, "model": 4}
    three = mesh_lib.make_mesh({"data": 3})  # single host: a mesh may use fewer devices
    assert dict(three.shape) == {"data": 3}
    assert list(three.devices.flat) == jax.devices()[:3]
    assert mesh_lib.batch_sharding(three).spec == PartitionSpec("data")
    assert mesh_lib.replicated(three).spec == PartitionSpec()


@pytest.mark.parametrize(
    ("axes", "match"),
    [
        ({"model": 2}, "needs a 'data' axis"),
        ({"data": -1, "model": -1}, "at most one -1"),
        ({"data": 0}, "sizes must be positive"),
        ({"data": -2}, "sizes must be positive"),
        ({"data": 16}, "needs 16 devices but 8 are available"),
        ({"data": 4, "model": 4}, "needs 16 devices"),
        ({"data": -2, "model": -4}, "sizes must be positive"),  # a positive product
        ({"data": -1, "model": 16}, "needs 16 devices"),  # nothing left for "data"
    ],
)
def test_make_mesh_rejects(axes, match):
    if jax.device_count() != 8:
        pytest.skip("messages name the 8 host devices of tests/conftest.py")
    with pytest.raises(mesh_lib.UserError, match=match):
        mesh_lib.make_mesh(axes)


def test_multi_host_mesh_must_use_every_device(monkeypatch):
    """On several processes every device takes part (a mesh on some of them would leave
    processes without data); on one host a smaller mesh is allowed."""
    if jax.device_count() != 8:
        pytest.skip("messages name the 8 host devices of tests/conftest.py")
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(mesh_lib.UserError, match=r"exactly 8 on multi-host runs"):
        mesh_lib.make_mesh({"data": 4})
    assert dict(mesh_lib.make_mesh({"data": -1}).shape) == {"data": 8}
    assert dict(mesh_lib.make_mesh({"data": 2, "model": 4}).shape) == {"data": 2, "model": 4}


LAUNCHER_VARS = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


@pytest.mark.parametrize(
    ("mode", "env", "initializes"),
    [
        ("off", {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, False),
        ("on", {}, True),
        ("auto", {}, False),
        ("auto", {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
        ("auto", {"SLURM_NTASKS": "4"}, True),
        ("auto", {"SLURM_NTASKS": "1"}, False),
        ("auto", {"OMPI_COMM_WORLD_SIZE": "2"}, True),
        ("auto", {"OMPI_COMM_WORLD_SIZE": "1", "SLURM_NTASKS": "1"}, False),
    ],
)
def test_distributed_initialize_only_under_a_launcher(mode, env, initializes, monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append(1))
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    mesh_lib.maybe_initialize_distributed(mode)
    assert calls == ([1] if initializes else [])


def test_distributed_mode_is_validated():
    with pytest.raises(mesh_lib.UserError, match="auto, on or off"):
        mesh_lib.maybe_initialize_distributed("yes")
