"""Property tests (hypothesis) of Sketchy, Shampoo, KrADagrad and KrADagrad* over random
pytrees: scalars, dimensions of 1, dimensions above ``block_size`` (blocked) and above
``max_precond_dim`` (graft-only), float32 and bfloat16 parameters, zero gradients and
gradient scales from 1e-30 to 1e15 (squares still finite in float32).

For every tree and scale, after a few steps (statistics and inverse roots refreshed every
step): each update is finite and has its parameter's shape and dtype, every state buffer is
finite, ``memory.state_bytes`` totals the state's buffers, and zero gradients move nothing.

Examples are derandomized (the same cases on every run); ``HYPOTHESIS_PROFILE=thorough``
draws many more (``-m slow`` runs a larger fixed budget too).
"""

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sketchy
import sketchy.kradagrad
from sketchy import memory

BLOCK = 4  # dims of 5 and 13 are blocked
MAX_PRECOND = 12  # a dim of 13 makes its parameter graft-only
COMMON = {"block_size": BLOCK, "max_precond_dim": MAX_PRECOND, "update_freq": 1}
COMMON |= {"start_preconditioning_step": 0}

OPTIMIZERS = {
    "sketchy": lambda: sketchy.sketchy(1e-3, rank=2, **COMMON),
    "shampoo": lambda: sketchy.shampoo(1e-3, **COMMON),
    "kradagrad": lambda: sketchy.kradagrad.kradagrad(1e-3, **COMMON),
    "kradagrad_star": lambda: sketchy.kradagrad.kradagrad_star(1e-3, **COMMON),
}
SCALES = [0.0, 1e-30, 1e-12, 1.0, 1e6, 1e15]
STEPS = 3

DIMS = st.sampled_from([1, 2, 3, 5, 13])
LEAF = st.tuples(
    st.lists(DIMS, min_size=0, max_size=3).map(tuple), st.sampled_from(["f32", "bf16"])
)
TREES = st.dictionaries(st.sampled_from("abcd"), LEAF, min_size=1, max_size=4)
DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}

settings.register_profile(
    "fast",
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
settings.register_profile(
    "thorough", max_examples=100, deadline=None, suppress_health_check=list(HealthCheck)
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fast")


@functools.lru_cache(maxsize=64)
def compiled(name: str, layout: tuple):
    """The jitted ``STEPS``-step run of optimizer ``name`` on the tree ``layout``."""
    tx = OPTIMIZERS[name]()

    def steps(params, grads_per_step):
        def one(carry, grads):
            params, state = carry
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), updates

        (params, state), updates = jax.lax.scan(one, (params, tx.init(params)), grads_per_step)
        return updates, state, params  # updates of every step, stacked

    return tx, jax.jit(steps)


def make_tree(layout, seed: int, scale: float | None = None):
    rng = np.random.default_rng(seed)
    tree = {}
    for key, shape, dtype in layout:
        x = rng.standard_normal(shape).astype(np.float32)
        tree[key] = jnp.asarray(x if scale is None else scale * x, DTYPES[dtype])
    return tree


def finite(tree) -> bool:
    return all(
        bool(jnp.all(jnp.isfinite(x)))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    )


def check(name: str, spec: dict, scale: float, seed: int):
    layout = tuple((k, shape, dtype) for k, (shape, dtype) in sorted(spec.items()))
    tx, run = compiled(name, layout)
    params = make_tree(layout, seed)
    grads = [make_tree(layout, seed + 1 + i, scale) for i in range(STEPS)]
    grads = jax.tree.map(lambda *g: jnp.stack(g), *grads)
    updates, state, new_params = run(params, grads)
    for key, shape, dtype in layout:
        u = updates[key]
        assert u.shape == (STEPS, *shape) and u.dtype == DTYPES[dtype], (key, u.shape, u.dtype)
        assert bool(jnp.all(jnp.isfinite(u))), (key, scale)
        assert new_params[key].dtype == DTYPES[dtype]
        if scale == 0.0:  # nothing to follow: nothing moves
            np.testing.assert_array_equal(np.asarray(u, np.float32), 0.0)
    assert finite(state), (name, layout, scale)
    buffers = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state))
    assert memory.state_bytes(state)["total"] == buffers
    abstract = jax.eval_shape(tx.init, params)
    assert memory.state_bytes(abstract) == memory.state_bytes(state)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@settings(settings.get_profile(PROFILE))
@given(spec=TREES, scale=st.sampled_from(SCALES), seed=st.integers(0, 2**16))
def test_updates_and_state_stay_finite(name, spec, scale, seed):
    check(name, spec, scale, seed)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("scale", SCALES)
def test_every_scale_on_a_mixed_tree(name, scale):
    """One fixed tree with every feature at once, at every scale (cheap: one compile)."""
    spec = {
        "a": ((), "f32"),  # scalar
        "b": ((1, 5), "bf16"),  # dimension of 1, blocked 5
        "c": ((13, 3), "f32"),  # above max_precond_dim: graft-only
        "d": ((5, 1, 2), "bf16"),
    }
    check(name, spec, scale, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=TREES, scale=st.sampled_from(SCALES), seed=st.integers(0, 2**16))
def test_updates_and_state_stay_finite_many(name, spec, scale, seed):
    check(name, spec, scale, seed)
