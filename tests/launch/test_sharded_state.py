"""Optimizer state sharded over 8 virtual CPU devices (``launch/sharding.py``, the rule of
``sketchy.sharding``): 20 Sketchy steps give the parameters of the unsharded 1-device run
to float32 tolerance, each device stores only its share of the state, and the vmapped
per-block work is partitioned (each device decomposes only its own blocks).

Shardings change where XLA computes, not what: the test guards the partitioned program
(collectives, partitioned decompositions inside ``lax.cond``, donation, the FSDP layout's
split matmuls) against computing something else. Tolerance: the runs differ in the order
of float32 sums (the gradient's sum over the batch: 8 partial sums and an all-reduce; the
FSDP layout's matmuls of split weights), a few ``u = 6e-8`` per step, which passes through
the preconditioner (eigendecompositions of the sketches) and compounds over 20 steps.
Measured: at most 4.5e-7 of each tensor's largest entry; ``rtol = 2e-5`` leaves 40x room
and is far below the O(1) change of a wrong program (a shard preconditioned with another
shard's factors, a batch counted 8 times).
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sketchy
from launch import mesh as mesh_lib
from launch import sharding
from launch.train_step import init_train_state, train_step

STEPS, BATCH = 20, 16
LAYOUTS = {
    # name: (mesh axes, mesh.* layout)
    "one_device": ({"data": 1}, {"state_axes": [], "min_shard_bytes": 0}),
    "data": ({"data": 8}, {"state_axes": ["data"], "min_shard_bytes": 0}),
    "data_model": (
        {"data": 4, "model": 2},
        {
            "batch_axes": ["data", "model"],
            "param_axes": ["model"],
            "state_axes": ["data", "model"],
            "min_shard_bytes": 0,  # the toy model's arrays are all small
        },
    ),
}


class ToyWorkload:
    """``y ~ relu(relu(x W1) W2) W3 + b``. With ``block_size=16``, W1 (32 x 64) and W2
    (64 x 32) are 8 blocks of 16 x 16 each: one group of 16 blocks, split 2 per device on
    the block axis; W3 (32 x 8) is 2 blocks of 16 x 8, which 8 devices do not divide (its
    factors are split on another dimension or kept whole); b is graft-only."""

    def init(self, rng):
        k1, k2, k3 = jax.random.split(rng, 3)
        params = {
            "w1": jax.random.normal(k1, (32, 64)) / np.sqrt(32),
            "w2": jax.random.normal(k2, (64, 32)) / np.sqrt(64),
            "w3": jax.random.normal(k3, (32, 8)) / np.sqrt(32),
            "b": jnp.zeros((8,)),
        }
        return params, {}

    def loss(self, params, model_state, batch, *, rng, train):
        del rng, train
        h = jax.nn.relu(jax.nn.relu(batch["x"] @ params["w1"]) @ params["w2"])
        pred = h @ params["w3"] + params["b"]
        total = jnp.sum(batch["w"][:, None] * (pred - batch["y"]) ** 2)
        return total, (jnp.sum(batch["w"]), model_state)


def batches():
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        x = rng.standard_normal((BATCH, 32)).astype(np.float32)
        y = rng.standard_normal((BATCH, 8)).astype(np.float32)
        yield {"x": x, "y": y, "w": np.ones(BATCH, np.float32)}


# A refresh at counts 0, 5, 10, 15; preconditioned from the second step on.
make_tx = functools.partial(
    sketchy.sketchy, rank=4, block_size=16, update_freq=5, start_preconditioning_step=1
)


def run(name: str):
    """The trainer's path: mesh, layout, shardings, jitted init and donated step."""
    axes, mcfg = LAYOUTS[name]
    workload, mesh = ToyWorkload(), mesh_lib.make_mesh(axes)
    layout = sharding.layout_of(mcfg, mesh)
    tx = make_tx(3e-3, **sharding.optimizer_options(make_tx, mesh, layout))
    init = functools.partial(init_train_state, workload, tx)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    shardings = sharding.train_state_shardings(mesh, layout, abstract)
    state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
    step = jax.jit(
        lambda s, b: train_step(workload, tx, 3e-3, s, b),
        out_shardings=(shardings, mesh_lib.replicated(mesh)),
        donate_argnums=0,
    )
    compiled = None
    for host_batch in batches():
        batch = mesh_lib.put_batch(host_batch, mesh, layout.batch_axes)
        if compiled is None:
            compiled = step.lower(state, batch).compile()
        state, _ = compiled(state, batch)
    report = sharding.report(mesh, abstract, shardings)
    return state, compiled.as_text(), report


@pytest.fixture(scope="module")
def runs():
    if jax.device_count() < 8:
        pytest.skip("needs the 8 host devices of tests/conftest.py")
    return {name: run(name) for name in LAYOUTS}


def stored_bytes_per_device(tree) -> dict:
    out = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
    return out


@pytest.mark.parametrize("name", ["data", "data_model"])
def test_params_after_20_steps_equal_the_unsharded_run(runs, name):
    reference = jax.tree.map(np.asarray, runs["one_device"][0].params)
    start, _ = ToyWorkload().init(jax.random.split(jax.random.PRNGKey(0))[0])
    got = jax.tree.map(np.asarray, runs[name][0].params)
    worst = max(
        float(np.max(np.abs(got[k] - reference[k]) / (np.abs(reference[k]) + 1e-3)))
        for k in reference
    )
    for k in reference:
        assert np.abs(reference[k] - np.asarray(start[k])).max() > 1e-2, k  # it trained
        np.testing.assert_allclose(
            got[k], reference[k], rtol=2e-5, atol=5e-6, err_msg=f"{k} (worst {worst:.1e})"
        )
    assert int(runs[name][0].opt_state.inner_state[0].failures) == 0


@pytest.mark.parametrize("name", ["data", "data_model"])
def test_each_device_stores_its_share(runs, name):
    state, _, report = runs[name]
    per_device = stored_bytes_per_device(state.opt_state)
    assert len(per_device) == 8
    # Every device holds the same share, the one the layout predicts, and at most ...
    assert set(per_device.values()) == {report["optimizer/bytes_per_device"]}
    # One device holds the whole (replicated) state.
    (replicated,) = stored_bytes_per_device(runs["one_device"][0].opt_state).values()
    ratio = max(per_device.values()) / replicated
    assert ratio == pytest.approx(report["optimizer/bytes_per_device_vs_replicated"])
    # ... about an eighth: the 2-block group's small factors and the scalars stay whole.
    assert ratio < 0.2, ratio
    assert report["optimizer/layout_block_axis_bytes"] > 0


def eigh_batches(hlo: str) -> list[tuple[int, int]]:
    """``(batch, d)`` of the symmetric eigendecompositions ``f32[batch, d, d]`` in a
    compiled program."""
    sizes = []
    for line in hlo.splitlines():
        if "custom_call_target=" in line and "syevd" in line:
            shapes = re.findall(r"f32\[(\d+),(\d+),\d+\]", line.split("custom-call(")[-1])
            sizes += [(int(b), int(d)) for b, d in shapes[:1]]
    return sizes


@pytest.mark.parametrize("name", ["data", "data_model"])
def test_vmapped_decompositions_are_partitioned(runs, name):
    """The FD steps of the 16-block group (``d = 16``): one device decomposes 16 blocks,
    each of 8 devices 2 (XLA partitioned the vmapped work instead of repeating it). The
    2-block group (W3: ``d = 8`` and the 12-dim Gram of its other axis), which 8 devices do
    not divide, is padded to 8 blocks for its decompositions (``block_sharding``, set by
    ``optimizer_options``): each device decomposes 1 block, where XLA alone would gather
    both and decompose them on every device."""
    one = eigh_batches(runs["one_device"][1])
    eight = eigh_batches(runs[name][1])
    assert (16, 16) in one and (2, 8) in one, one
    assert (2, 16) in eight and all(b == 1 for b, d in eight if d != 16), eight


def test_optimizer_options_only_where_the_state_is_split():
    mesh = mesh_lib.make_mesh({"data": 8})
    split = sharding.layout_of({"state_axes": ["data"]}, mesh)
    whole = sharding.layout_of({"state_axes": []}, mesh)
    opts = sharding.optimizer_options(make_tx, mesh, split)
    assert opts["block_sharding"].spec == jax.sharding.PartitionSpec(("data",))
    assert sharding.optimizer_options(make_tx, mesh, whole) == {}
    adam = functools.partial(optax.adamw, b1=0.9)  # takes no block_sharding
    assert sharding.optimizer_options(adam, mesh, split) == {}
