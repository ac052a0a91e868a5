"""The named steps of :func:`sketchy.kronecker.scale_by_kronecker`, each checked alone
against numpy, and the graft as an optax transform."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sketchy
from sketchy.blocking import apply_along_axis, mode_product
from sketchy.grafting import as_graft
from sketchy.kronecker import apply_graft, precondition, refresh_step, statistics_step
from sketchy.layout import gather_blocks, plan_layout, scatter_blocks
from sketchy.matrix_power import psd_power
from sketchy.shampoo import shampoo_rule

RNG = np.random.default_rng(0)


def rand(*shape):
    return jnp.asarray(RNG.standard_normal(shape), jnp.float32)


def test_layout_groups_equal_block_shapes_and_sets_exponents():
    shapes = [(8, 6), (3, 3, 4), (8, 6), (7,), (16, 6)]
    lay = plan_layout(shapes, block_size=8, max_precond_dim=100)
    assert lay.plans[3] is None  # a vector is graft-only
    assert lay.groups == {"8x6": (0, 2, 4), "3x3x4": (1,)}  # (16, 6): two 8x6 blocks
    assert lay.exponents == {"8x6": 0.25, "3x3x4": pytest.approx(1 / 6)}  # 9 > 8: not merged
    assert plan_layout(shapes, block_size=8, max_precond_dim=100, exponent_override=0.5)[2] == {
        "8x6": 0.5,
        "3x3x4": 0.5,
    }


def test_gather_scatter_roundtrip():
    leaves = [rand(8, 6), rand(7), rand(16, 6)]
    lay = plan_layout([x.shape for x in leaves], block_size=8, max_precond_dim=100)
    blocks = gather_blocks(leaves, lay)
    assert blocks["8x6"].shape == (3, 8, 6)
    back = scatter_blocks(blocks, lay)
    assert sorted(back) == [0, 2]
    for i in (0, 2):
        np.testing.assert_array_equal(np.asarray(back[i]), np.asarray(leaves[i]))


def test_statistics_refresh_precondition_match_numpy():
    """Shampoo's rule through the three steps equals L = (1-b2) G G^T, R = (1-b2) G^T G,
    D = L^-1/4 G R^-1/4 block by block."""
    b2, eps = 0.9, 1e-3
    rule = shampoo_rule(b2=b2, eps=eps, relative_eps=False, update_freq=1)
    g = rand(2, 5, 3)  # two 5x3 blocks
    factors = {
        "5x3": tuple(
            jax.tree.map(lambda a: jnp.broadcast_to(a, (2, *a.shape)), rule.init_factor(d))
            for d in (5, 3)
        )
    }
    factors, failed = statistics_step(rule, factors, {"5x3": g}, jnp.zeros((), jnp.int32))
    assert int(failed) == 0
    factors, failed = refresh_step(rule, factors, {"5x3": 0.25})
    assert int(failed) == 0
    out = precondition(rule, factors, {"5x3": g}, {"5x3": 0.25})["5x3"]
    for k in range(2):
        gk = np.asarray(g[k], np.float64)
        left = (1 - b2) * gk @ gk.T
        right = (1 - b2) * gk.T @ gk

        def root(m):
            w, v = np.linalg.eigh(m)
            return (v * (np.maximum(w, 0) + eps) ** -0.25) @ v.T

        np.testing.assert_allclose(
            np.asarray(factors["5x3"][0].statistics[k]), left, rtol=1e-5, atol=1e-6
        )
        want = root(left) @ gk @ root(right)
        np.testing.assert_allclose(np.asarray(out[k]), want, rtol=2e-4, atol=1e-5)


def test_apply_graft_rescales_only_when_active():
    leaves = [rand(4, 3), rand(5)]
    graft_dirs = [2 * leaves[0], -leaves[1]]
    direction = {0: rand(4, 3)}
    on = apply_graft(leaves, direction, graft_dirs, rescale=True, active=jnp.array(True))
    want = direction[0] * jnp.linalg.norm(graft_dirs[0]) / jnp.linalg.norm(direction[0])
    np.testing.assert_allclose(np.asarray(on[0]), np.asarray(want), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(on[1]), np.asarray(graft_dirs[1]))  # graft-only
    off = apply_graft(leaves, direction, graft_dirs, rescale=True, active=jnp.array(False))
    np.testing.assert_array_equal(np.asarray(off[0]), np.asarray(graft_dirs[0]))
    raw = apply_graft(leaves, direction, graft_dirs, rescale=False, active=jnp.array(True))
    np.testing.assert_array_equal(np.asarray(raw[0]), np.asarray(direction[0]))


def test_any_optax_transform_grafts():
    """A transform passed as ``graft`` sets the per-tensor norm; a name builds the same."""
    params = {"w": rand(6, 4)}
    grads = {"w": rand(6, 4)}
    adam = optax.scale_by_adam(b1=0.0, b2=0.99, eps=1e-8)
    tx = sketchy.scale_by_sketchy(rank=2, graft=adam, start_preconditioning_step=0)
    out, _ = tx.update(grads, tx.init(params), params)
    ref, _ = adam.update(grads, adam.init(params), params)
    assert float(jnp.linalg.norm(out["w"])) == pytest.approx(float(jnp.linalg.norm(ref["w"])))
    by_name = sketchy.scale_by_sketchy(rank=2, graft="sgd", start_preconditioning_step=0)
    out, _ = by_name.update(grads, by_name.init(params), params)
    assert float(jnp.linalg.norm(out["w"])) == pytest.approx(float(jnp.linalg.norm(grads["w"])))


def test_as_graft_resolves_names_once():
    assert as_graft("none", 0.9, 1e-8) is None and as_graft(None, 0.9, 1e-8) is None
    tx = optax.identity()
    assert as_graft(tx, 0.9, 1e-8) is tx
    assert isinstance(as_graft("adagrad", 1.0, 1e-8), optax.GradientTransformation)
    with pytest.raises(ValueError, match="graft must be one of"):
        as_graft("adam", 0.9, 1e-8)
    with pytest.raises(ValueError, match="graft must be one of"):
        as_graft(3, 0.9, 1e-8)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_apply_along_axis_is_the_mode_product(axis):
    # every case of mode_product: first axis (A = 1), middle (batched), last (B = 1)
    block = rand(3, 4, 5)
    m = rand(6, block.shape[axis])
    out = apply_along_axis(lambda y: mode_product(m, y), block, axis)
    want = np.moveaxis(np.tensordot(np.asarray(m), np.asarray(block), axes=(1, axis)), 0, axis)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)
    mt = rand(block.shape[axis], 6)  # transpose=True: m^T applied
    out_t = apply_along_axis(lambda y: mode_product(mt, y, transpose=True), block, axis)
    want_t = np.moveaxis(np.tensordot(np.asarray(mt).T, np.asarray(block), axes=(1, axis)), 0, axis)
    np.testing.assert_allclose(np.asarray(out_t), want_t, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_apply_along_axis_copies_nothing_block_sized(axis):
    # The point of the [A, d, B] folding: no transposed copy of the block, in or out (the
    # moveaxis it replaced copied the block twice and halved the speed of a low-rank apply).
    # A square m keeps the output block-sized, so a copy of either side has block.size
    # entries; the dims differ, so m (or its broadcast) never has that many.
    block = rand(4, 32, 96)
    d = block.shape[axis]
    fn = jax.jit(lambda m, b: apply_along_axis(lambda y: mode_product(m, y), b, axis))
    hlo = fn.lower(rand(d, d), block).compile().as_text()
    sizes = [
        int(np.prod([int(n) for n in dims.split(",") if n]))
        for dims in re.findall(r"= f32\[([\d,]*)\][^ ]* (?:transpose|copy)\(", hlo)
    ]
    assert block.size not in sizes, sizes


@pytest.mark.parametrize(("exponent", "eps", "relative"), [(-0.25, 1e-3, True), (0.5, 0.0, False)])
def test_psd_power_matches_numpy(exponent, eps, relative):
    a = np.asarray(rand(6, 6), np.float64)
    x = a @ a.T
    w, v = np.linalg.eigh(x)
    floor = eps * w.max() if relative else eps
    want = (v * (w + floor) ** exponent) @ v.T
    got, top = psd_power(jnp.asarray(x, jnp.float32), exponent, eps, relative)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-3, atol=1e-4)
    assert float(top) == pytest.approx(w.max(), rel=1e-5)


def test_kradagrad_variants_are_one_implementation():
    """The four public KrADagrad functions are the two family functions with one flag."""
    from sketchy import kradagrad as k

    assert k.scale_by_kradagrad.func is k.scale_by_kradagrad_family
    assert k.kradagrad_star.func is k.kradagrad_family
    assert k.scale_by_kradagrad.keywords == {"one_axis": True}
    assert k.kradagrad_star.keywords == {"one_axis": False}
    assert "X_i^{1/(2p)}" in k.kradagrad_star.__doc__
    params = {"w": rand(4, 3)}
    for fn in (k.kradagrad, k.kradagrad_star):
        tx = fn(1e-2, update_freq=1, start_preconditioning_step=0)
        updates, _ = tx.update(params, tx.init(params), params)
        assert np.all(np.isfinite(np.asarray(updates["w"])))
