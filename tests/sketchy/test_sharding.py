"""The optimizer-state sharding rule (:mod:`sketchy.sharding`): which dimension each array
is split on, and the per-device bytes it gives on ResNet-50's shapes (abstract states:
``jax.eval_shape``, a mesh given by its axis sizes, so no devices are needed)."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

import sketchy
from sketchy import sharding

ROOT = Path(__file__).resolve().parents[2]


def resnet50_shapes():
    spec = importlib.util.spec_from_file_location("shapes", ROOT / "benchmarks/param_shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.resnet50_shapes()


def abstract_params(shapes):
    return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}


@pytest.mark.parametrize(
    ("shape", "axes", "order", "expected"),
    [
        ((16, 8, 4), [("data", 8)], [0, 1, 2], P("data")),  # the block axis
        ((6, 256, 32), [("data", 8)], [0, 1, 2], P(None, "data")),  # 6 blocks: next dim
        ((6, 9, 9), [("data", 8)], [0, 1, 2], P()),  # nothing divisible: replicated
        ((16, 8), [("data", 4), ("model", 2)], [0, 1], P(("data", "model"))),
        ((6, 8), [("data", 4), ("model", 2)], [0, 1], P("model", "data")),
        ((3, 3, 64, 128), [("data", 8)], [3, 2, 0, 1], P(None, None, None, "data")),
        ((4,), [("data", 8)], [0], P()),  # smaller than the axis
        ((8, 8), [("data", 1)], [0, 1], P()),  # a 1-device axis splits nothing
    ],
)
def test_spec_for(shape, axes, order, expected):
    assert sharding.spec_for(shape, axes, order) == expected


def toy_params():
    # block_size 16: w1 and w2 are 8 blocks of 16 x 16 each (a group of 16 blocks); w3 is
    # one 16 x 8 block; b is graft-only.
    return abstract_params({"w1": (64, 32), "w2": (32, 64), "w3": (16, 8), "b": (16,)})


def test_state_specs_of_sketchy():
    params = toy_params()
    tx = sketchy.sketchy(1e-3, rank=4, block_size=16)
    state = jax.eval_shape(tx.init, params)
    specs = sharding.state_specs(state, {"data": 8})
    by_path = {
        jax.tree_util.keystr(p): s
        for p, s in jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[
            0
        ]
    }
    factors = {k: v for k, v in by_path.items() if ".factors" in k}
    # 16 blocks of 16 x 16: every field on the block axis (tail [16] too).
    assert {v for k, v in factors.items() if "'16x16'" in k} == {P("data")}
    # One 16 x 8 block: the 16-row factor's vectors on their rows; the 8-row factor's on
    # its 8 rows; eigenvalues (4 per factor) and the tail stay whole.
    sixteen_by_eight = {k: v for k, v in factors.items() if "'16x8'" in k}
    assert sixteen_by_eight[next(k for k in sixteen_by_eight if "[0].eigvecs" in k)] == P(
        None, "data"
    )
    assert sixteen_by_eight[next(k for k in sixteen_by_eight if "[1].eigvecs" in k)] == P(
        None, "data"
    )
    assert {v for k, v in sixteen_by_eight.items() if "eigvals" in k or "tail" in k} == {P()}
    # Parameter-shaped state (graft, momentum) on its largest divisible dimension.
    others = {k: v for k, v in by_path.items() if ".factors" not in k}
    shaped = {k: v for k, v in others.items() if v != P()}
    assert shaped and all(v in (P("data"), P(None, "data")) for v in shaped.values())
    assert any("['w2']" in k and v == P(None, "data") for k, v in shaped.items())  # 64 > 32
    summary = sharding.layout_summary(state, specs)
    assert summary["block_axis"] > 0 and summary["other_axis"] > 0
    assert summary["replicated"] > 0 and summary["scalars"] > 0


def test_parameter_shaped_state_follows_the_parameters():
    """FSDP: parameters split over `model`; their momentum and graft state are split the same
    way over `model` (and further over `data`)."""
    params = abstract_params({"w": (48, 64), "v": (6, 10), "b": (64,)})
    state = jax.eval_shape(sketchy.sketchy(1e-3, rank=4).init, params)
    mesh = {"data": 4, "model": 2}
    pspecs = sharding.param_specs(params, mesh, ("model",))
    assert pspecs == {"w": P(None, "model"), "v": P(None, "model"), "b": P("model")}
    sspecs = sharding.state_specs(state, mesh, axes=("data", "model"), param_axes=("model",))
    trace = sspecs.inner_state[1].trace  # optax.trace of the momentum, parameter-shaped
    # The same dimension as the parameter first, then `data` wherever it still divides.
    assert trace == {
        "w": P(None, ("model", "data")),
        "v": P(None, "model"),  # 10 / 2 = 5 and 6 are not divisible by 4
        "b": P(("model", "data")),
    }


def test_unknown_axis_is_named():
    with pytest.raises(ValueError, match=r"mesh has no axis \['modle'\]"):
        sharding.param_specs(toy_params(), {"data": 8}, ("modle",))


@pytest.mark.parametrize("optimizer", ["sketchy", "shampoo"])
def test_resnet50_per_device_bytes_fall_as_one_over_n(optimizer):
    """The issue's target: at N = 8 each device holds <= 1/6 of the replicated state."""
    params = abstract_params(resnet50_shapes())
    tx = {
        "sketchy": lambda: sketchy.sketchy(1e-3, rank=256, block_size=1024),
        "shampoo": lambda: sketchy.shampoo(1e-3, block_size=1024),
    }[optimizer]()
    state = jax.eval_shape(tx.init, params)
    replicated = sharding.per_device_bytes(state, sharding.state_specs(state, {"data": 1}), {})
    assert replicated == sketchy.memory.state_bytes(state)["total"]
    ratios = {}
    for n in (2, 4, 8):
        mesh = {"data": n}
        ratios[n] = sharding.per_device_bytes(state, sharding.state_specs(state, mesh), mesh)
        ratios[n] /= replicated
    assert ratios[8] <= 1 / 6, ratios
    assert ratios[2] > ratios[4] > ratios[8] >= 1 / 8, ratios


def eight_devices():
    if jax.device_count() < 8:
        pytest.skip("needs the 8 host devices of tests/conftest.py")
    return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def test_map_blocks_pads_splits_and_cuts_back():
    """3 blocks on 8 devices: padded to 8 for ``fn``, each device computes one block, and
    the 3 real outputs equal a plain ``vmap`` (the padded blocks' outputs are dropped)."""
    from sketchy.kronecker import map_blocks

    mesh = eight_devices()
    x = jax.random.normal(jax.random.key(0), (3, 6, 6))
    x = x @ jnp.swapaxes(x, 1, 2)

    def fn(a, b):
        w, v = jnp.linalg.eigh(a + b)
        return w, jnp.any(w <= 0)  # a failure flag: true on the padded zero blocks

    split = jax.sharding.NamedSharding(mesh, P("data"))
    got = jax.jit(lambda a: map_blocks(fn, (a, 0.0 * a), split))(x)
    want = jax.vmap(fn)(x, 0.0 * x)
    assert got[0].shape == (3, 6) and got[1].shape == (3,)
    assert not bool(jnp.any(got[1]))  # the padded blocks' flags are cut off
    assert jnp.allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    hlo = jax.jit(lambda a: map_blocks(fn, (a, 0.0 * a), split)).lower(x).compile().as_text()
    assert "f32[1,6,6]" in hlo and "f32[3,6,6]{" not in hlo.split("custom-call(")[-1]


@pytest.mark.parametrize("make", [sketchy.shampoo, sketchy.sketchy])
def test_block_sharding_changes_where_not_what(make):
    """Shampoo's refresh and Sketchy's FD steps split over 8 devices by blocks give the
    same updates as on one device (5 steps of a 3-block group and a 2-block group)."""
    mesh = eight_devices()
    params = {"a": jnp.zeros((24, 16)), "b": jnp.zeros((16, 8)), "c": jnp.zeros((8,))}
    grads = [
        jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.key(i), p.shape), params)
        for i in range(5)
    ]
    kwargs = dict(block_size=8, start_preconditioning_step=1, update_freq=2)
    if make is sketchy.sketchy:
        kwargs["rank"] = 3
    out = []
    for block_sharding in (None, jax.sharding.NamedSharding(mesh, P("data"))):
        tx = make(1e-2, block_sharding=block_sharding, **kwargs)
        state, updates = jax.jit(tx.init)(params), []
        step = jax.jit(tx.update)
        for g in grads:
            u, state = step(g, state, params)
            updates.append(u)
        out.append(updates)
    # float32 rounding differs (LAPACK on 1-block vs 3-block batches), amplified by the
    # inverse roots: measured <= 5e-6 of a tensor's largest entry; a wrong program (a block
    # preconditioned with another's factors) is off by O(1).
    for plain, split in zip(*out, strict=True):
        for k in params:
            scale = float(jnp.max(jnp.abs(plain[k])))
            assert float(jnp.max(jnp.abs(plain[k] - split[k]))) <= 1e-4 * scale, k
