"""Paper-faithful options: Shampoo's subsampling control, the merge threshold, the RMSProp
grafts of ``distributed_shampoo``, preconditioned vectors; each also listed in the configs."""

import inspect
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import sketchy
from sketchy.blocking import plan_blocks

ROOT = pathlib.Path(__file__).resolve().parents[2]
PARAMS = {
    "w": jnp.zeros((12, 20)),  # exact for rank >= 20
    "conv": jnp.zeros((3, 3, 4, 5)),  # merged to (36, 5)
    "bias": jnp.zeros((20,)),  # graft-only unless precondition_1d
}


def grads_stream(params, steps, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield {k: jnp.asarray(rng.standard_normal(x.shape), jnp.float32) for k, x in params.items()}


def run(tx, params, steps, seed=0):
    state = tx.init(params)
    update = jax.jit(tx.update)
    outs = []
    for g in grads_stream(params, steps, seed):
        u, state = update(g, state, params)
        outs.append(u)
    return outs, state


def assert_updates_close(a_list, b_list, names, scale=1.0, rtol=2e-3):
    for a, b in zip(a_list, b_list, strict=True):
        for name in names:
            x, y = np.asarray(a[name]), scale * np.asarray(b[name])
            assert np.linalg.norm(x - y) <= rtol * np.linalg.norm(y), name


# ----------------------------------------------------------- item 3: subsampling control


@pytest.mark.parametrize("update_freq", [1, 3])
def test_sketchy_equals_shampoo_on_the_same_gradients(update_freq):
    """rank >= d and ``statistics_freq=update_freq``: equal after grafting, sqrt(1-b2) x before."""
    common = dict(
        b2=0.9, eps=1e-4, update_freq=update_freq, start_preconditioning_step=0, block_size=64
    )
    shampoo = dict(statistics_freq=update_freq, **common)
    steps = 7
    sk, _ = run(sketchy.scale_by_sketchy(rank=64, graft="rmsprop", **common), PARAMS, steps)
    sh, _ = run(sketchy.scale_by_shampoo(graft="rmsprop", **shampoo), PARAMS, steps)
    assert_updates_close(sk, sh, PARAMS)
    sk, _ = run(sketchy.scale_by_sketchy(rank=64, graft="none", **common), PARAMS, steps)
    sh, _ = run(sketchy.scale_by_shampoo(graft="none", **shampoo), PARAMS, steps)
    assert_updates_close(sk, sh, ("w", "conv"), scale=np.sqrt(1 - 0.9))


def test_default_shampoo_sees_more_gradients_than_sketchy():
    """Why the control exists: with update_freq > 1 the default Shampoo is not Sketchy's limit."""
    common = dict(b2=0.9, eps=1e-4, update_freq=3, start_preconditioning_step=0, block_size=64)
    sk, _ = run(sketchy.scale_by_sketchy(rank=64, **common), PARAMS, 7)
    sh, _ = run(sketchy.scale_by_shampoo(**common), PARAMS, 7)
    rel = np.linalg.norm(np.asarray(sk[-1]["w"] - sh[-1]["w"])) / np.linalg.norm(sh[-1]["w"])
    assert rel > 0.05


def test_statistics_freq_skips_statistics_between_updates():
    tx = sketchy.scale_by_shampoo(update_freq=3, statistics_freq=3, start_preconditioning_step=0)
    _, state = run(tx, PARAMS, 5)  # statistics at counts 0 and 3 only
    gs = list(grads_stream(PARAMS, 5))
    g0, g3 = (np.asarray(gs[i]["w"], np.float64) for i in (0, 3))
    expected = 0.999 * (1 - 0.999) * g0 @ g0.T + (1 - 0.999) * g3 @ g3.T
    np.testing.assert_allclose(
        np.asarray(state.factors["12x20"][0].statistics[0]), expected, rtol=1e-4, atol=1e-7
    )


# ----------------------------------------------------------- item 5: merge threshold


def test_merge_threshold_is_separate_from_block_size():
    """ResNet-50's 3x3x256x256 kernel: order 3 merging to block_size, 2304 x 256 at 4096."""
    default = plan_blocks((3, 3, 256, 256), 1024, 4096)
    assert default.merged == (9, 256, 256) and default.total_blocks == 1
    ref = plan_blocks((3, 3, 256, 256), 1024, 4096, merge_size=4096)
    assert ref.merged == (2304, 256) and ref.block_shape == (768, 256) and ref.total_blocks == 3
    tx = sketchy.scale_by_shampoo(block_size=1024, max_merged_dim=4096)
    state = tx.init({"k": jnp.zeros((3, 3, 256, 256))})
    assert list(state.factors) == ["768x256"]
    assert state.factors["768x256"][0].statistics.shape == (3, 768, 768)
    # Merging below block_size: 12x20 stays a matrix either way; 3x3x4x5 -> 9x4x5 at 9.
    assert plan_blocks((3, 3, 4, 5), 64, 4096, merge_size=9).merged == (9, 4, 5)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_merge_threshold_raises(bad):
    with pytest.raises(ValueError, match="max_merged_dim must be"):
        sketchy.shampoo(1e-3, max_merged_dim=bad)


# ----------------------------------------------------------- item 5: RMSProp grafts


def numpy_graft(kind, grads, b2, eps):
    """``distributed_shampoo``'s RMSPROP / RMSPROP_NORMALIZED, and ours with bias correction."""
    nu, out = 0.0, []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        if kind == "rmsprop_normalized":
            g = g / (np.linalg.norm(g) + 1e-25)
        nu = b2 * nu + (1 - b2) * g * g
        nu_hat = nu / (1 - b2**t) if kind == "rmsprop" else nu
        out.append(g / (np.sqrt(nu_hat) + eps))
    return out


@pytest.mark.parametrize("kind", ["rmsprop", "rmsprop_uncorrected", "rmsprop_normalized"])
def test_rmsprop_grafts(kind):
    """Graft-only parameters (the bias) move by the graft direction itself."""
    b2, eps = 0.95, 1e-8
    tx = sketchy.scale_by_shampoo(b2=b2, graft=kind, graft_eps=eps)
    outs, _ = run(tx, {"bias": PARAMS["bias"]}, 4)
    gs = [g["bias"] for g in grads_stream({"bias": PARAMS["bias"]}, 4)]
    for got, want in zip(outs, numpy_graft(kind, gs, b2, eps), strict=True):
        np.testing.assert_allclose(np.asarray(got["bias"]), want, rtol=1e-5)
    # The first step shows the bias correction: |g| / sqrt(1 - b2) per entry without it.
    first = np.abs(np.asarray(outs[0]["bias"]))
    if kind == "rmsprop_uncorrected":
        np.testing.assert_allclose(first, 1 / np.sqrt(1 - b2), rtol=1e-5)


@pytest.mark.parametrize("kind", ["rmsprop_uncorrected", "rmsprop_normalized"])
def test_uncorrected_grafts_reject_b2_one(kind):
    with pytest.raises(ValueError, match="needs b2 < 1"):
        sketchy.sketchy(1e-3, b2=1.0, graft=kind)


# ----------------------------------------------------------- item 5: vectors


def test_precondition_1d_is_full_matrix_rmsprop_on_the_vector():
    """A vector with ``precondition_1d``: ``(L + eps' I)^(-1/2) g``, ``L`` the EMA of ``g g^T``."""
    b2, eps, steps = 0.9, 1e-3, 4
    params = {"bias": PARAMS["bias"]}
    tx = sketchy.scale_by_shampoo(
        b2=b2,
        eps=eps,
        update_freq=1,
        start_preconditioning_step=0,
        graft="none",
        precondition_1d=True,
    )
    outs, state = run(tx, params, steps)
    assert list(state.factors) == ["20"]
    stat = np.zeros((20, 20))
    for got, g in zip(outs, grads_stream(params, steps), strict=True):
        g = np.asarray(g["bias"], np.float64)
        stat = b2 * stat + (1 - b2) * np.outer(g, g)
        w, v = np.linalg.eigh(stat)
        w = np.maximum(w, 0) + eps * w.max()
        want = (v * w**-0.5) @ v.T @ g
        np.testing.assert_allclose(np.asarray(got["bias"]), want, rtol=2e-3, atol=1e-5)


def test_precondition_1d_blocks_long_vectors_and_sketchy_reduces_to_shampoo():
    big = {"b": jnp.zeros((48,))}
    tx = sketchy.scale_by_sketchy(rank=4, block_size=16, precondition_1d=True)
    state = tx.init(big)
    assert state.factors["16"][0].eigvecs.shape == (3, 16, 4)  # 3 blocks of 16, rank 4
    common = dict(b2=0.9, eps=1e-4, update_freq=1, start_preconditioning_step=0)
    params = {"bias": PARAMS["bias"], "w": PARAMS["w"]}
    sk, _ = run(sketchy.scale_by_sketchy(rank=64, precondition_1d=True, **common), params, 5)
    sh, _ = run(sketchy.scale_by_shampoo(precondition_1d=True, **common), params, 5)
    assert_updates_close(sk, sh, params)
    # And the option changes the bias' update (otherwise it is the RMSProp graft).
    plain, _ = run(sketchy.scale_by_shampoo(**common), params, 5)
    diff = np.linalg.norm(np.asarray(plain[-1]["bias"] - sh[-1]["bias"]))
    assert diff > 0.05 * np.linalg.norm(np.asarray(sh[-1]["bias"]))


# ----------------------------------------------------------- configs list every option


@pytest.mark.parametrize(
    ("name", "fn"),
    [("shampoo", sketchy.shampoo), ("sketchy", sketchy.sketchy)],
)
def test_configs_list_the_options_with_the_code_defaults(name, fn):
    cfg = yaml.safe_load((ROOT / "configs" / "optimizer" / f"{name}.yaml").read_text())
    params = inspect.signature(fn).parameters
    assert set(cfg) - {"_target_", "_partial_"} == set(params)
    for key in ("max_merged_dim", "precondition_1d", "graft", "fd_method", "statistics_freq"):
        if key in params:
            assert cfg[key] == params[key].default, key
