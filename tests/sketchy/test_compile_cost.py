"""Compile cost of the Kronecker update: what XLA has to generate code for.

Compile time on CPU grows with the amount of code XLA emits; the update must not carry
constructs that expand per tensor into thousands of instructions.
"""

import re

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

import sketchy
from sketchy.kronecker import all_finite

SHAPES = {f"w{i}": (64 + 8 * i, 96) for i in range(6)} | {f"b{i}": (96,) for i in range(6)}


def compiled_text(tx):
    params = {k: jnp.zeros(s, jnp.float32) for k, s in SHAPES.items()}
    state = tx.init(params)
    return jax.jit(tx.update).lower(params, state, params).compile().as_text()


@pytest.mark.parametrize(
    "make",
    [
        lambda: sketchy.scale_by_sketchy(rank=16, block_size=128),
        lambda: sketchy.scale_by_shampoo(block_size=128),
        # The whole optimizer: optax.apply_if_finite's own per-tensor check is replaced too.
        lambda: sketchy.sketchy(1e-3, rank=16, block_size=128),
    ],
    ids=["sketchy", "shampoo", "sketchy_full"],
)
def test_finiteness_check_is_not_a_predicate_reduction(make):
    """``all(isfinite(g))`` per tensor expands into predicate ``and`` instructions on CPU
    (measured here: 228 for Sketchy, 215 for Shampoo, and optax.apply_if_finite adds 35
    around the whole optimizer; 26,580 on ResNet-50); with the float-sum checks only the
    small per-factor checks remain (39, 26 and 39 for the whole optimizer)."""
    text = compiled_text(make())
    assert len(re.findall(r"= pred\[[^\]]*\] and\(", text)) < 60


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_all_finite_matches_isfinite(bad, dtype):
    huge = 3e38 if dtype == jnp.float32 else 1e38  # finite, and x * x would overflow
    leaves = [jnp.ones((5, 7), dtype), jnp.full((3,), huge, dtype)]
    check = jax.jit(all_finite)
    assert bool(check(leaves))
    for i in range(len(leaves)):
        broken = list(leaves)
        broken[i] = broken[i].at[(0,) * broken[i].ndim].set(bad)
        assert not bool(check(broken))


def test_finiteness_flag_is_computed_once():
    """XLA's fusion pass copies a cheap scalar into every consumer's fusion: the finiteness
    flag (one add per leaf) was recomputed inside every leaf's graft and select fusions,
    quadratic in the number of leaves (26,000 scalar adds, 60% of the instructions of
    ResNet-50's update; compile time -33%). With the barrier the sum is emitted once."""
    text = compiled_text(sketchy.sketchy(1e-3, rank=16, block_size=128))
    scalar_adds = len(re.findall(r"= f32\[\] add\(", text))
    assert scalar_adds < 10 * len(SHAPES), scalar_adds  # measured: 76 with, 263 without


def _eqns(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs nested in its equations' params."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    yield from _eqns(inner)


def test_fd_branch_stacks_its_own_blocks():
    """Sketchy's FD step (a ``cond`` every ``update_freq`` steps) stacks the blocks of each
    group inside its branch: given the stacked blocks as an operand (as Shampoo's every-step
    statistics are), ResNet-50's FD step (Sketchy r256) took 3.6-4.2 s instead of 2.9-3.3 s
    (measured in one process, old and new code alternating)."""
    shapes = [(8, 6), (8, 6), (16, 6), (7,)]  # one group: 4 blocks of 8x6
    params = [jnp.zeros(s, jnp.float32) for s in shapes]
    tx = sketchy.scale_by_sketchy(rank=4, block_size=8, update_freq=3)
    jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params), params).jaxpr
    fd_conds = [
        e
        for e in _eqns(jaxpr)
        if e.primitive.name == "cond"
        and any(i.primitive.name == "eigh" for b in e.params["branches"] for i in _eqns(b.jaxpr))
    ]
    assert fd_conds
    for eqn in fd_conds:
        shapes_in = [tuple(v.aval.shape) for v in eqn.invars]
        assert (4, 8, 6) not in shapes_in, shapes_in
