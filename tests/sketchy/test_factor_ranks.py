"""Sketchy with per-parameter, per-axis ranks (``factor_ranks``) and resizing a live state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sketchy
from sketchy.blocking import plan_blocks, to_blocks
from sketchy.frequent_directions import fd_covariance
from sketchy.kronecker import KroneckerState, scale_by_kronecker
from sketchy.memory import state_bytes
from sketchy.rank_budget import allocate_ranks, budget_of_uniform_rank, rank_cost
from sketchy.rank_resize import (
    as_factor_ranks,
    factor_spectra,
    kronecker_state,
    param_factors,
    resize_state,
)
from sketchy.shampoo import shampoo_rule

KW = dict(rank=8, block_size=16, b2=0.99, update_freq=2, start_preconditioning_step=2)
SHAPES = {
    "a": (32, 24),
    "b": (16, 12),
    "c": (16, 12),
    "w": (20, 16),
    "thin": (16, 4),  # not "v": memory.state_bytes reads a dict key "v" as a statistics field
    "bias": (12,),
}
# Block shapes at block_size 16: a: 2x2 blocks 16x12; b, c: 16x12; w: 2 blocks 10x16;
# thin: 16x4; bias: graft-only. With rank 8 every default factor is min(8, d).
MIXED = {"['a']": (4, 2), "['b']": 3, "['w']": (5, 8)}
REL_TOL = 1e-4  # float32 FD over ~10 steps (see test_rank_budget.REL_TOL)


def params():
    return {name: jnp.zeros(shape, jnp.float32) for name, shape in SHAPES.items()}


def grad_stream(steps, seed):
    """Gradients with a decaying row spectrum (so sketches of rank < d drop real mass)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        g = {}
        for i, (name, shape) in enumerate(SHAPES.items()):
            scale = np.geomspace(1.0, 0.02, shape[0]).reshape(-1, *[1] * (len(shape) - 1))
            g[name] = jnp.asarray(rng.standard_normal(shape) * scale * 10.0**i, jnp.float32)
        out.append(g)
    return out


def run(tx, state, grads):
    update = jax.jit(tx.update)
    p, updates = params(), []
    for g in grads:
        u, state = update(g, state, p)
        updates.append(u)
    return state, updates


def tx_of(factor_ranks=None):
    return sketchy.sketchy(0.1, factor_ranks=factor_ranks, **KW)


def test_uniform_factor_ranks_change_nothing():
    grads = grad_stream(6, 0)
    ref_state, ref = run(tx_of(), tx_of().init(params()), grads)
    # Every sketched parameter at the default rank; thin's (8, 12) caps to (8, 4) = default.
    same = {"['a']": 8, "['b']": (8, 8), "['c']": 8, "['w']": 8, "['thin']": (8, 12)}
    tx = tx_of(same)
    state, out = run(tx, tx.init(params()), grads)
    assert sorted(kronecker_state(state).factors) == ["10x16", "16x12", "16x4"]
    assert jax.tree.structure(state) == jax.tree.structure(ref_state)
    for x, y in zip(jax.tree.leaves((state, out)), jax.tree.leaves((ref_state, ref)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def expected_ranks(assignment):
    """``{(path, axis): (d, nblocks, rank)}`` computed from the shapes, not the state."""
    out = {}
    for name, shape in SHAPES.items():
        plan = plan_blocks(shape, KW["block_size"], 4096)
        if plan is None:
            continue
        path = f"['{name}']"
        value = assignment.get(path, KW["rank"])
        ranks = (value,) * len(plan.block_shape) if isinstance(value, int) else value
        for axis, d in enumerate(plan.block_shape):
            out[(path, axis)] = (d, plan.total_blocks, min(ranks[axis], d))
    return out


def test_mixed_ranks_shapes_and_jit():
    tx = tx_of(MIXED)
    state, updates = run(tx, tx.init(params()), grad_stream(4, 1))
    keys = sorted(kronecker_state(state).factors)
    assert keys == ["10x16:r5x8", "16x12", "16x12:r3x3", "16x12:r4x2", "16x4"]
    factors = param_factors(state, params(), MIXED, **KW)
    expected = expected_ranks(MIXED)
    assert sorted(factors) == sorted(expected)
    for key, (d, n, r) in expected.items():
        assert factors[key].eigvecs.shape == (n, d, r), key
        assert factors[key].eigvals.shape == (n, r) and factors[key].tail.shape == (n,)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(updates))
    assert float(jnp.max(factors[("['b']", 0)].eigvals)) > 0  # b's blocks were sketched


def test_per_parameter_rank_reaches_the_right_parameter():
    """b at full rank (16, 12) among rank-8 parameters updates exactly as under uniform rank
    16 (its factors exact either way): its ranks went to its own blocks, nobody else's."""
    grads = grad_stream(6, 2)
    tx = tx_of({"['b']": 16})
    _, mixed = run(tx, tx.init(params()), grads)
    full = sketchy.sketchy(0.1, **{**KW, "rank": 16})
    _, ref = run(full, full.init(params()), grads)
    for u, r in zip(mixed, ref, strict=True):
        np.testing.assert_allclose(
            u["b"], r["b"], rtol=1e-5, atol=1e-6 * float(jnp.abs(r["b"]).max())
        )
    assert not np.allclose(mixed[-1]["a"], ref[-1]["a"], rtol=1e-3)  # a did lose rank


def dense_covariances(grads, update_freq, b2):
    """``{(path, axis): [nblocks, d, d]}``: the exact EMA ``sum b2^(t-s) X_s X_s^T`` of every
    block's matricization over the FD steps (float64)."""
    covs = {}
    for t, g in enumerate(grads):
        if t % update_freq:
            continue
        for name, x in g.items():
            plan = plan_blocks(x.shape, KW["block_size"], 4096)
            if plan is None:
                continue
            blocks = np.asarray(to_blocks(x, plan), np.float64)
            for axis in range(blocks.ndim - 1):
                m = np.moveaxis(blocks, axis + 1, 1).reshape(
                    len(blocks), blocks.shape[axis + 1], -1
                )
                key = (f"['{name}']", axis)
                covs[key] = b2 * covs.get(key, 0.0) + m @ m.transpose(0, 2, 1)
    return covs


def assert_sandwich(state, assignment, covs):
    """``Gbar <= G <= Gbar + tail I`` per block of every factor (relative to lambda_max)."""
    for key, f in param_factors(state, params(), assignment, **KW).items():
        for j in range(f.tail.shape[0]):
            one = jax.tree.map(lambda a, j=j: a[j], f)
            gbar, cov = np.asarray(fd_covariance(one), np.float64), covs[key][j]
            top = np.linalg.eigvalsh(cov)[-1]
            assert np.linalg.eigvalsh(cov - gbar)[0] >= -REL_TOL * top, key
            upper = gbar + float(one.tail) * np.eye(len(cov)) - cov
            assert np.linalg.eigvalsh(upper)[0] >= -REL_TOL * top, key


def strip_factors(state):
    is_node = lambda x: isinstance(x, KroneckerState)  # noqa: E731
    return jax.tree.map(
        lambda x: x._replace(factors={}) if is_node(x) else x, state, is_leaf=is_node
    )


def test_resize_keeps_sandwich_and_continues():
    warm_grads, later = grad_stream(20, 3), grad_stream(10, 4)
    tx_old = tx_of()
    old, _ = run(tx_old, tx_old.init(params()), warm_grads)
    resized = resize_state(old, params(), MIXED, **KW)

    # Exactly what tx_new.init makes, in structure, shapes and dtypes.
    tx_new = tx_of(MIXED)
    shapes = lambda t: [(x.shape, x.dtype) for x in jax.tree.leaves(t)]  # noqa: E731
    target = jax.eval_shape(tx_new.init, params())
    assert jax.tree.structure(resized) == jax.tree.structure(target)
    assert shapes(resized) == shapes(target)
    # Counts, graft, momentum, counters: the old arrays.
    for x, y in zip(*map(jax.tree.leaves, map(strip_factors, (resized, old))), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Ranks went where asked, and the truncated sketches still sandwich the true statistics.
    for key, (d, n, r) in expected_ranks(MIXED).items():
        assert param_factors(resized, params(), MIXED, **KW)[key].eigvecs.shape == (n, d, r)
    assert_sandwich(old, None, dense_covariances(warm_grads, KW["update_freq"], KW["b2"]))
    assert_sandwich(resized, MIXED, dense_covariances(warm_grads, KW["update_freq"], KW["b2"]))

    # Resize + continue runs, keeps the sandwich, and is deterministic.
    cont, updates = run(tx_new, resized, later)
    again = resize_state(old, params(), MIXED, **KW)
    _, updates2 = run(tx_of(MIXED), again, later)
    for u, v in zip(jax.tree.leaves(updates), jax.tree.leaves(updates2), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
    all_grads = warm_grads + later  # count continues at 20: FD steps stay on even counts
    assert_sandwich(cont, MIXED, dense_covariances(all_grads, KW["update_freq"], KW["b2"]))
    # c and thin kept their rank: their updates are those of the run that was not resized.
    _, ref = run(tx_old, old, later)
    for u, r in zip(updates, ref, strict=True):
        for name in ("c", "thin"):
            scale = float(jnp.abs(r[name]).max())
            np.testing.assert_allclose(u[name], r[name], rtol=1e-4, atol=1e-5 * scale)


def test_allocated_ranks_round_trip_within_budget():
    tx_old = tx_of()
    old, _ = run(tx_old, tx_old.init(params()), grad_stream(6, 5))
    spectra = factor_spectra(old, params(), **KW)
    budget = budget_of_uniform_rank(spectra, 4)
    new = as_factor_ranks(allocate_ranks(spectra, budget))
    assert set(new) == {"['a']", "['b']", "['c']", "['w']", "['thin']"}
    resized = resize_state(old, params(), new, **KW)
    stats = state_bytes(resized)["statistics"]
    assert stats <= 4 * budget
    assert stats == 4 * sum(rank_cost(s, new[p][a]) for (p, a), s in spectra.items())
    jax.jit(tx_of(new).update)(grad_stream(1, 6)[0], resized, params())  # it runs


def test_state_bytes_of_mixed_ranks():
    state = jax.eval_shape(tx_of(MIXED).init, params())
    uniform = jax.eval_shape(tx_of().init, params())
    stats = sum(n * (d * r + r + 1) * 4 for d, n, r in expected_ranks(MIXED).values())
    got, ref = state_bytes(state), state_bytes(uniform)
    assert got["statistics"] == stats
    assert stats < ref["statistics"]  # the assignment only lowers ranks
    # The rest (graft, momentum, counters) does not depend on ranks.
    assert got["total"] - got["statistics"] == ref["total"] - ref["statistics"] > 0


def test_errors():
    p = params()
    with pytest.raises(ValueError, match=r"unknown parameter path \"\['nope'\]\""):
        tx_of({"['nope']": 4}).init(p)
    with pytest.raises(ValueError, match=r"\['a'\] needs one rank >= 1 or 2 .*\(16, 12\)"):
        tx_of({"['a']": (4, 4, 4)}).init(p)
    with pytest.raises(ValueError, match=r"\['a'\] needs one rank >= 1"):
        tx_of({"['a']": 0}).init(p)
    with pytest.raises(ValueError, match=r"\['bias'\] is graft-only"):
        tx_of({"['bias']": 4}).init(p)
    shampoo = shampoo_rule(b2=0.99, eps=1e-6, relative_eps=True, update_freq=1)
    with pytest.raises(ValueError, match="no rank"):  # rank-free rules refuse factor_ranks
        scale_by_kronecker(shampoo, graft=None, factor_ranks={"['a']": 4}).init(p)
    state = tx_of().init(p)
    with pytest.raises(ValueError, match=r"\['b'\] axis 1: rank 8 -> 12 \(truncation only\)"):
        resize_state(state, p, {"['b']": (8, 12)}, **KW)
    with pytest.raises(ValueError, match="not arguments of sketchy.sketchy"):
        resize_state(state, p, MIXED, rnak=8)
    # Options other than the optimizer's: a group the state lacks, or one of other size.
    with pytest.raises(ValueError, match="no group '8x8'"):
        resize_state(state, p, None, **{**KW, "block_size": 8})
    with pytest.raises(ValueError, match="'16x12' has 6 blocks, layout 2"):
        resize_state(state, p, None, **{**KW, "max_precond_dim": 30})  # a: graft-only
