"""Merging, blocking and their inverse."""

import jax.numpy as jnp
import numpy as np
import pytest

from sketchy.blocking import from_blocks, matricize, merge_dims, plan_blocks, to_blocks


@pytest.mark.parametrize(
    ("shape", "merged"),
    [
        ((3, 3, 64, 64), (576, 64)),
        ((3, 3, 512, 512), (9, 512, 512)),
        ((1, 1, 256, 64), (256, 64)),
        ((12, 20), (12, 20)),
        ((2, 3, 4), (6, 4)),
        ((2048, 1000), (2048, 1000)),
        ((1, 7), (7,)),
    ],
)
def test_merge_dims(shape, merged):
    assert merge_dims(shape, 1024) == merged


def test_plans():
    assert plan_blocks((2048,), 1024, 4096) is None  # 1-D: graft-only
    assert plan_blocks((8, 5000), 1024, 4096) is None  # a dim above max_precond_dim
    p = plan_blocks((2048, 1000), 1024, 4096)
    assert p.num_blocks == (2, 1) and p.block_shape == (1024, 1000)
    p = plan_blocks((1500, 30), 1024, 4096)
    assert p.num_blocks == (2, 1) and p.block_shape == (750, 30)  # equal split, no padding
    p = plan_blocks((2049, 7), 1024, 4096)
    assert p.block_shape == (683, 7) and p.padded == (2049, 7)


@pytest.mark.parametrize("shape", [(2049, 7), (30, 1100, 3), (5, 2, 1, 9), (1500, 2100)])
def test_blocks_roundtrip(shape):
    plan = plan_blocks(shape, 512, 4096)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    blocks = to_blocks(x, plan)
    assert blocks.shape == (plan.total_blocks, *plan.block_shape)
    np.testing.assert_array_equal(np.asarray(from_blocks(blocks, plan)), np.asarray(x))
    # Every entry lands in exactly one block (padding is zero).
    assert float(jnp.sum(blocks)) == pytest.approx(float(jnp.sum(x)), rel=1e-4)


def test_block_contents():
    x = jnp.arange(6 * 4, dtype=jnp.float32).reshape(6, 4)
    plan = plan_blocks((6, 4), 3, 100)  # (2 blocks of 3) x (2 blocks of 2)
    blocks = to_blocks(x, plan)
    np.testing.assert_array_equal(np.asarray(blocks[1]), np.asarray(x[:3, 2:]))
    np.testing.assert_array_equal(np.asarray(blocks[2]), np.asarray(x[3:, :2]))


def test_matricize():
    b = jnp.arange(24.0).reshape(2, 3, 4)
    m = matricize(b, 1)
    assert m.shape == (3, 8)
    np.testing.assert_array_equal(np.asarray(m[1]), np.asarray(b[:, 1, :]).ravel())
