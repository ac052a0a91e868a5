"""Sketchy vs Shampoo, state invariants (shapes, compilation, checkpoints), failure policy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import sketchy

PARAMS = {
    "w": jnp.zeros((12, 20)),  # exact for rank >= 20
    "conv": jnp.zeros((3, 3, 4, 5)),  # merged to (36, 5)
    "bias": jnp.zeros((20,)),  # graft-only
}


def grads_stream(params, steps, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), steps)
    leaves, treedef = jax.tree.flatten(params)
    for key in keys:
        ks = jax.random.split(key, len(leaves))
        yield jax.tree.unflatten(
            treedef, [jax.random.normal(k, x.shape) for k, x in zip(ks, leaves, strict=True)]
        )


def test_test_params_are_preconditioned():
    """Guards the tests below: the matrix and the conv kernel are really preconditioned."""
    state = sketchy.scale_by_shampoo().init(PARAMS)
    dims = {k: tuple(f.statistics.shape[-1] for f in axes) for k, axes in state.factors.items()}
    assert dims == {"36x5": (36, 5), "12x20": (12, 20)}  # conv, w; the bias is graft-only


def run(tx, params, steps, seed=0):
    state = tx.init(params)
    update = jax.jit(tx.update)
    outs = []
    for g in grads_stream(params, steps, seed):
        u, state = update(g, state, params)
        outs.append(u)
    return outs, state


@pytest.mark.parametrize("b2", [0.99, 0.9])
def test_sketchy_reduces_to_shampoo(b2):
    """rank >= every dim: Sketchy's sketch is exact, S = L / (1 - b2), so with exponent
    1/(2p) on each of p axes Sketchy's ungrafted direction is sqrt(1 - b2) x Shampoo's."""
    common = dict(b2=b2, eps=1e-4, update_freq=1, start_preconditioning_step=0, block_size=64)
    sk, _ = run(sketchy.scale_by_sketchy(rank=64, graft="none", **common), PARAMS, 6)
    sh, _ = run(sketchy.scale_by_shampoo(graft="none", **common), PARAMS, 6)
    for a, b in zip(sk, sh, strict=True):
        for name in ("w", "conv"):
            np.testing.assert_allclose(
                np.asarray(a[name]), np.sqrt(1 - b2) * np.asarray(b[name]), rtol=2e-3, atol=1e-5
            )
    # With grafting the scale factor is gone: the updates are equal.
    sk, _ = run(sketchy.scale_by_sketchy(rank=64, graft="rmsprop", **common), PARAMS, 4)
    sh, _ = run(sketchy.scale_by_shampoo(graft="rmsprop", **common), PARAMS, 4)
    for a, b in zip(sk, sh, strict=True):
        for name in PARAMS:
            np.testing.assert_allclose(
                np.asarray(a[name]), np.asarray(b[name]), rtol=2e-3, atol=1e-5
            )


def test_equal_block_shapes_share_one_group():
    """Parameters whose blocks have the same shape are preconditioned in one vmap."""
    params = {"a": jnp.zeros((12, 20)), "b": jnp.zeros((12, 20)), "c": jnp.zeros((24, 20))}
    tx = sketchy.scale_by_shampoo(block_size=20, start_preconditioning_step=0, update_freq=1)
    state = tx.init(params)
    assert list(state.factors) == ["12x20"]  # c is cut into two 12x20 blocks
    assert state.factors["12x20"][0].statistics.shape == (4, 12, 12)
    # Grouping changes nothing: each parameter alone gets the same update.
    g = next(grads_stream(params, 1))
    together, _ = tx.update(g, state, params)
    for name in params:
        alone, _ = tx.update({name: g[name]}, tx.init({name: params[name]}), {name: params[name]})
        np.testing.assert_allclose(
            np.asarray(together[name]), np.asarray(alone[name]), rtol=2e-3, atol=1e-5
        )


def test_low_rank_differs_from_shampoo():
    """The reduction test above must be able to fail: a real sketch is not Shampoo."""
    common = dict(b2=0.99, eps=1e-4, update_freq=1, start_preconditioning_step=0, graft="none")
    sk, _ = run(sketchy.scale_by_sketchy(rank=3, **common), PARAMS, 4)
    sh, _ = run(sketchy.scale_by_shampoo(**common), PARAMS, 4)
    ratio = np.asarray(sk[-1]["w"]) / (np.sqrt(0.01) * np.asarray(sh[-1]["w"]))
    assert np.abs(ratio - 1).max() > 0.05


OPTIMIZERS = {
    "sketchy": lambda: sketchy.sketchy(1e-2, rank=4, update_freq=2, start_preconditioning_step=1),
    "shampoo": lambda: sketchy.shampoo(1e-2, update_freq=2, start_preconditioning_step=1),
    "sketchy_adafactor": lambda: sketchy.sketchy(1e-2, rank=4, graft="adafactor"),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_abstract_init_stable_state_and_no_recompilation(name):
    tx = OPTIMIZERS[name]()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), PARAMS)
    shapes = jax.eval_shape(tx.init, abstract)
    state = tx.init(PARAMS)
    spec = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)  # noqa: E731
    assert spec(shapes) == spec(state)
    update = jax.jit(tx.update)
    for g in grads_stream(PARAMS, 5):
        _, state = update(g, state, PARAMS)
        assert spec(state) == spec(shapes)
    assert update._cache_size() == 1


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_orbax_roundtrip_is_exact(name, tmp_path):
    tx = OPTIMIZERS[name]()
    _, state = run(tx, PARAMS, 3)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(3, args=ocp.args.StandardSave(state))
        mngr.wait_until_finished()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        restored = mngr.restore(3, args=ocp.args.StandardRestore(abstract))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # And the restored state continues identically.
    g = next(grads_stream(PARAMS, 1, seed=9))
    u1, _ = tx.update(g, state, PARAMS)
    u2, _ = tx.update(g, restored, PARAMS)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("make", [sketchy.scale_by_sketchy, sketchy.scale_by_shampoo])
def test_nonfinite_gradient_never_enters_state(make):
    tx = make(update_freq=1, start_preconditioning_step=0)
    _, state = run(tx, PARAMS, 2)
    bad = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), PARAMS)
    _, new = jax.jit(tx.update)(bad, state, PARAMS)
    assert int(new.nonfinite_steps) == 1
    for a, b in zip(
        jax.tree.leaves((new.factors, new.graft)),
        jax.tree.leaves((state.factors, state.graft)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_full_optimizer_skips_nonfinite_step():
    tx = sketchy.sketchy(0.1, rank=4, update_freq=1, start_preconditioning_step=0)
    params = jax.tree.map(jnp.ones_like, PARAMS)
    state = tx.init(params)
    g = next(grads_stream(params, 1))
    u, state = tx.update(g, state, params)
    params = optax.apply_updates(params, u)
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.inf), g)
    u, new_state = tx.update(bad, state, params)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(u))
    for leaf in jax.tree.leaves(new_state):
        assert bool(jnp.all(jnp.isfinite(leaf)))


def test_failed_inverse_root_keeps_previous_and_counts():
    tx = sketchy.scale_by_shampoo(update_freq=1, start_preconditioning_step=0)
    _, state = run(tx, PARAMS, 2)
    w = state.factors["12x20"]
    poisoned = w[0]._replace(statistics=w[0].statistics.at[:, 0, 0].set(jnp.nan))
    state = state._replace(factors={**state.factors, "12x20": (poisoned, w[1])})
    # The gradient is finite, so the stats step runs; the refresh of axis 0 must fail.
    g = next(grads_stream(PARAMS, 1, seed=3))
    _, new = tx.update(g, state, PARAMS)
    assert int(new.failures) == int(state.failures) + 1  # one block, one failed factor
    np.testing.assert_array_equal(
        np.asarray(new.factors["12x20"][0].preconditioner), np.asarray(w[0].preconditioner)
    )
    assert bool(jnp.all(jnp.isfinite(new.factors["12x20"][1].preconditioner)))


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        (sketchy.sketchy, {"rank": 0}, "rank must be"),
        (sketchy.sketchy, {"block_size": 0}, "block_size must be"),
        (sketchy.shampoo, {"b2": 1.5}, r"b2 must be in \(0, 1\]"),
        (sketchy.shampoo, {"b2": 0.0}, r"b2 must be in \(0, 1\]"),
        (sketchy.sketchy, {"update_freq": 0}, "update_freq must be"),
        (sketchy.shampoo, {"graft": "adam"}, "graft must be one of"),
        (sketchy.sketchy, {"tail_decay": "half"}, "tail_decay must be"),
        (sketchy.sketchy, {"b1": 1.0}, r"b1 must be in \[0, 1\)"),
        (sketchy.shampoo, {"b2": 1.0}, r"graft='rmsprop' .* needs b2 < 1"),
        (sketchy.sketchy, {"b2": 1.0, "graft": "adafactor"}, r"graft='adafactor' .* b2 < 1"),
    ],
)
def test_bad_hyperparameters_raise(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(1e-3, **kwargs)
