"""The fast FD method (``method="eigh"``) is exact to float32 rounding, like the thin SVD.

Float32 rounding of a decomposition of ``Z = [sqrt(b2) U diag(sqrt(lam)), X]`` perturbs its
singular values by about ``u s_max`` (``u = 2^-24``), so an SVD reports a direction ``Z``
has no mass in at ``s^2 ~ u^2 lambda_max`` (1e-14 lambda_max); an ``eigh`` of the Gram
``Z Z^T`` reports it at ``u lambda_max`` (1e-7 lambda_max). That noise is the escaped mass
``rho`` of the FD step, and the tail sums it over ``1 / (1 - b2)`` steps: on an exactly
low-rank stream it must stay at the SVD's rounding level, else the complement of the
sketch is preconditioned by noise.
"""

import inspect
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import sketchy
from sketchy.frequent_directions import fd_covariance, fd_init, fd_update

U32 = float(np.finfo(np.float32).eps)  # 2^-23: rounding scale of one float32 operation
ROOT = pathlib.Path(__file__).resolve().parents[2]


def low_rank_stream(d, n, r, steps, seed):
    """``x_t = P W_t`` with a fixed orthonormal ``P`` (``d x r``): rank ``r`` exactly."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, r)))[0]
    return [(basis @ rng.standard_normal((r, n))).astype(np.float32) for _ in range(steps)]


def full_rank_stream(d, n, steps, seed):
    """Full rank with a decaying spectrum (1 .. 1e-2 in scale), like gradient covariances."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(1.0, 1e-2, d)[:, None]
    return [(rng.standard_normal((d, n)) * scale).astype(np.float32) for _ in range(steps)]


def run_fd(stream, k, b2, method):
    state = fd_init(stream[0].shape[0], k)
    update = jax.jit(lambda s, x: fd_update(s, x, decay=b2, method=method))
    for x in stream:
        state, _ = update(state, jnp.asarray(x))
    return state


def complement_scale(state, eps=1e-6, exponent=0.25):
    """What the preconditioner does off the sketch: ``(tau + eps lambda_max)^-exponent``."""
    top = float(state.eigvals[0] + state.tail)
    return (float(state.tail) + eps * top) ** -exponent


@pytest.mark.parametrize(
    ("d", "n", "k"),
    [
        (256, 256, 32),  # the Gram is d x d (k + n >= d): the branch without a floor
        (256, 40, 32),  # the Gram is (k + n) x (k + n)
    ],
)
def test_eigh_tail_on_exactly_low_rank_stream_is_at_rounding_level(d, n, k):
    """Rank-8 stream, 200 FD steps, b2 = 0.999: ``tau / lambda_max`` within 10x of the SVD's.

    Before the fix the ``d x d`` branch gave 1.07e-5 (SVD: 1.1e-12), 10x the relative
    epsilon: the complement of the sketch was preconditioned 0.54x too weakly.
    """
    stream = low_rank_stream(d, n, r=8, steps=200, seed=0)
    svd = run_fd(stream, k, 0.999, "svd")
    eig = run_fd(stream, k, 0.999, "eigh")
    rel = {}
    for name, s in (("svd", svd), ("eigh", eig)):
        rel[name] = float(s.tail) / float(s.eigvals[0] + s.tail)
    # The rounding level of 200 steps, for an SVD that happens to be luckier than 1e-12.
    floor = U32**2 * len(stream)
    assert rel["svd"] < 1e-10
    assert rel["eigh"] <= 10 * max(rel["svd"], floor), rel
    np.testing.assert_allclose(complement_scale(eig), complement_scale(svd), rtol=1e-3)
    # Same retained spectrum (the 8 live directions) to float32 accuracy.
    np.testing.assert_allclose(np.asarray(eig.eigvals[:8]), np.asarray(svd.eigvals[:8]), rtol=1e-4)
    cov_e, cov_s = np.asarray(fd_covariance(eig)), np.asarray(fd_covariance(svd))
    np.testing.assert_allclose(cov_e, cov_s, atol=1e-4 * np.abs(cov_s).max())


@pytest.mark.parametrize(("d", "n", "k"), [(256, 256, 32), (256, 40, 32), (96, 300, 16)])
def test_eigh_tail_on_full_rank_stream_matches_svd(d, n, k):
    """Full-rank stream: the escaped mass is real, and ``eigh`` gets it to 1e-3 relative."""
    stream = full_rank_stream(d, n, steps=60, seed=1)
    svd = run_fd(stream, k, 0.999, "svd")
    eig = run_fd(stream, k, 0.999, "eigh")
    assert float(svd.tail) > 1e-3 * float(svd.eigvals[0])  # the stream does escape
    np.testing.assert_allclose(float(eig.tail), float(svd.tail), rtol=1e-3)
    np.testing.assert_allclose(np.asarray(eig.eigvals), np.asarray(svd.eigvals), rtol=1e-3)
    u = np.asarray(eig.eigvecs)
    np.testing.assert_allclose(u.T @ u, np.eye(k), atol=1e-4)


def test_fast_exact_method_is_the_default():
    """``fd_method`` defaults to the Gram + Rayleigh-Ritz method in code and in the config."""
    assert inspect.signature(sketchy.sketchy).parameters["fd_method"].default == "eigh"
    assert inspect.signature(sketchy.scale_by_sketchy).parameters["fd_method"].default == "eigh"
    cfg = yaml.safe_load((ROOT / "configs/optimizer/sketchy.yaml").read_text())
    assert cfg["fd_method"] == "eigh"


# ------------------------------------------------------- chunked FD: the guarantees, not identity


def decayed_covariance(stream, b2):
    g = np.zeros((stream[0].shape[0],) * 2)
    for x in stream:
        x = x.astype(np.float64)
        g = b2 * g + x @ x.T
    return g


@pytest.mark.parametrize("method", ["eigh", "svd"])
@pytest.mark.parametrize(
    ("kind", "b2"), [("random", 0.99), ("random", 1.0), ("rank12", 0.95), ("rank6", 0.99)]
)
def test_chunked_fd_sandwich_and_observation_6(kind, b2, method):
    """``Gbar <= G^(b2) <= Gbar + tau I`` and ``tau <= min_j (l-j)^-1 sum_{i>j} lambda_i``.

    ``G^(b2) = sum_t b2^(T-t) x_t x_t^T``, ``l = k + 1`` (the paper's sketch size); each
    gradient (96 columns) is fed in chunks of ``k = 8``.
    """
    d, n, k, steps = 64, 96, 8, 30
    if kind == "random":
        stream = full_rank_stream(d, n, steps, seed=2)
    else:
        stream = low_rank_stream(d, n, r=int(kind[4:]), steps=steps, seed=3)
    state = fd_init(d, k)
    update = jax.jit(lambda s, x: fd_update(s, x, decay=b2, method=method, chunk=k))
    for x in stream:
        state, rho = update(state, jnp.asarray(x))
        assert np.isfinite(float(rho))
    g = decayed_covariance(stream, b2)
    lam = np.sort(np.linalg.eigvalsh(g))[::-1]
    gap = np.linalg.eigvalsh(g - np.asarray(fd_covariance(state), np.float64))
    # float32 rounding of ~360 FD steps (30 gradients x 12 chunks): ~1e-6 lambda_max measured.
    tail, tol = float(state.tail), 1e-4 * lam[0]
    assert gap.min() >= -tol  # the sketch is below G^(b2) ...
    assert gap.max() <= tail + tol  # ... and sketch + tail I above it
    ell = k + 1
    bound = min(lam[j:].sum() / (ell - j) for j in range(ell))
    assert tail <= bound * (1 + 1e-4) + tol
    if kind == "rank6":  # rank <= k: nothing escapes, up to rounding
        assert tail <= 1e-9 * lam[0]


def test_chunked_fd_is_a_different_sketch_but_as_good():
    """Chunking changes the sketch (so it is an option, not a refactoring) and its tail
    stays within the one-shot's order of magnitude on a decaying spectrum."""
    d, n, k = 64, 96, 8
    stream = full_rank_stream(d, n, steps=20, seed=4)
    one = run_fd(stream, k, 0.99, "eigh")
    state = fd_init(d, k)
    update = jax.jit(lambda s, x: fd_update(s, x, decay=0.99, method="eigh", chunk=k))
    for x in stream:
        state, _ = update(state, jnp.asarray(x))
    assert abs(float(state.tail) / float(one.tail) - 1) > 1e-3
    assert float(state.tail) <= 3 * float(one.tail)


def test_chunked_sketchy_optimizer():
    """``fd_chunk`` reaches the FD step; with ``rank >= d`` it is ignored (exact sketch)."""
    params = {"w": jnp.zeros((40, 30))}
    rng = np.random.default_rng(0)
    grads = [{"w": jnp.asarray(rng.standard_normal((40, 30)), jnp.float32)} for _ in range(3)]
    common = dict(update_freq=1, start_preconditioning_step=0, block_size=64)
    outs = {}
    for name, kw in {
        "exact": dict(rank=64),
        "exact_chunked": dict(rank=64, fd_chunk=4),
        "low": dict(rank=4),
        "low_chunked": dict(rank=4, fd_chunk=4),
    }.items():
        tx = sketchy.scale_by_sketchy(**common, **kw)
        state, update = tx.init(params), jax.jit(tx.update)
        for g in grads:
            u, state = update(g, state, params)
        outs[name] = np.asarray(u["w"])
        assert np.all(np.isfinite(outs[name])) and int(state.failures) == 0
    np.testing.assert_array_equal(outs["exact"], outs["exact_chunked"])
    assert np.abs(outs["low"] - outs["low_chunked"]).max() > 1e-4
    with pytest.raises(ValueError, match="fd_chunk must be"):
        sketchy.sketchy(1e-3, fd_chunk=0)


@pytest.mark.parametrize(("d", "k", "n"), [(8, 8, 40), (16, 12, 64), (24, 4, 6)])
def test_inverse_root_apply_both_paths_match_dense(d, k, n):
    """The apply forms ``d x d`` on the fly when cheaper (the first two); same operator."""
    from sketchy.frequent_directions import fd_inverse_root_apply

    state = fd_init(d, k)
    for x in full_rank_stream(d, 2 * d, steps=3, seed=5):
        state, _ = fd_update(state, jnp.asarray(x), decay=0.9)
    y = np.random.default_rng(0).standard_normal((d, n)).astype(np.float32)
    cov = np.asarray(fd_covariance(state), np.float64) + float(state.tail) * np.eye(d)
    top = float(state.eigvals[0] + state.tail)
    w, v = np.linalg.eigh(cov + 1e-3 * top * np.eye(d))
    dense = (v * w**-0.25) @ v.T @ y
    got = fd_inverse_root_apply(state, jnp.asarray(y), 0.25, 1e-3)
    np.testing.assert_allclose(np.asarray(got), dense, rtol=1e-4, atol=1e-5 * np.abs(dense).max())
