"""Frequent Directions against a dense float64 reference of the paper's Algorithm 1 + decay."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchy.frequent_directions import fd_covariance, fd_init, fd_inverse_root_apply, fd_update


def dense_fd(stream, k, decay):
    """Paper Alg. 1 with the EMA of Sec. 4.3 on dense float64 matrices (k retained)."""
    d = stream[0].shape[0]
    sketch, tail, escaped = np.zeros((d, d)), 0.0, []
    for x in stream:
        lam, u = np.linalg.eigh(decay * sketch + x @ x.T)
        lam, u = lam[::-1], u[:, ::-1]
        rho = lam[k] if k < d else 0.0
        sketch = (u[:, :k] * np.maximum(lam[:k] - rho, 0)) @ u[:, :k].T
        tail = decay * tail + rho
        escaped.append(rho)
    return sketch, tail, escaped


def stream_of(d, n, steps, seed, decay_spectrum=True):
    rng = np.random.default_rng(seed)
    # A decaying spectrum makes the top-k well separated, like gradient covariances.
    scale = np.geomspace(1.0, 1e-2, d)[:, None] if decay_spectrum else 1.0
    return [(rng.standard_normal((d, n)) * scale).astype(np.float32) for _ in range(steps)]


@pytest.mark.parametrize("method", ["svd", "eigh"])
@pytest.mark.parametrize(
    ("d", "n", "k", "decay"), [(24, 3, 6, 0.9), (16, 20, 5, 1.0), (12, 2, 12, 0.99)]
)
def test_matches_dense_reference(method, d, n, k, decay):
    stream = stream_of(d, n, steps=15, seed=d + n + k)
    ref_sketch, ref_tail, ref_escaped = dense_fd([x.astype(np.float64) for x in stream], k, decay)
    state = fd_init(d, k)
    update = jax.jit(lambda s, x: fd_update(s, x, decay=decay, method=method))
    escaped = []
    for x in stream:
        state, rho = update(state, jnp.asarray(x))
        escaped.append(float(rho))
    scale = np.abs(ref_sketch).max()
    np.testing.assert_allclose(np.asarray(fd_covariance(state)), ref_sketch, atol=2e-4 * scale)
    np.testing.assert_allclose(float(state.tail), ref_tail, rtol=2e-3, atol=1e-5 * scale)
    np.testing.assert_allclose(escaped, ref_escaped, rtol=2e-3, atol=1e-5 * scale)
    # Orthonormal retained directions, descending non-negative eigenvalues.
    u, lam = np.asarray(state.eigvecs), np.asarray(state.eigvals)
    live = lam > 0
    np.testing.assert_allclose(u[:, live].T @ u[:, live], np.eye(live.sum()), atol=1e-4)
    assert np.all(np.diff(lam) <= 1e-6 * scale) and np.all(lam >= 0)


@pytest.mark.parametrize("decay", [1.0, 0.95])
def test_liberty_bound_and_sandwich(decay):
    """rho_{1:T} <= min_j (l-j)^-1 sum_{i>j} lambda_i(G), and Gbar <= G <= Gbar + tail I."""
    d, n, k = 20, 4, 5
    stream = stream_of(d, n, steps=30, seed=7, decay_spectrum=False)
    state = fd_init(d, k)
    g = np.zeros((d, d))
    for x in stream:
        state, _ = fd_update(state, jnp.asarray(x), decay=decay)
        g = decay * g + x.astype(np.float64) @ x.T.astype(np.float64)
    lam = np.sort(np.linalg.eigvalsh(g))[::-1]
    ell = k + 1  # the paper's sketch size
    bound = min(lam[j:].sum() / (ell - j) for j in range(ell))
    tail = float(state.tail)
    assert 0 < tail <= bound * (1 + 1e-4)
    diff = g - np.asarray(fd_covariance(state), np.float64)
    eig = np.linalg.eigvalsh(diff)
    assert eig.min() >= -1e-4 * lam[0]  # the sketch lower-bounds G
    assert eig.max() <= tail * (1 + 1e-3) + 1e-4 * lam[0]  # sketch + tail I upper-bounds it


def test_exact_when_rank_covers_dimension():
    d = 6
    stream = stream_of(d, 2, steps=5, seed=3)
    state = fd_init(d, 10)
    assert state.eigvecs.shape == (d, d)
    g = np.zeros((d, d))
    for x in stream:
        state, rho = fd_update(state, jnp.asarray(x), decay=0.9)
        g = 0.9 * g + x.astype(np.float64) @ x.T
        assert float(rho) == 0.0
    np.testing.assert_allclose(np.asarray(fd_covariance(state)), g, atol=1e-4 * np.abs(g).max())
    assert float(state.tail) == 0.0


def test_tail_decay_option():
    d, k = 10, 2
    stream = stream_of(d, 3, steps=6, seed=11)
    a, b = fd_init(d, k), fd_init(d, k)
    for x in stream:
        a, rho_a = fd_update(a, jnp.asarray(x), decay=0.81)
        b, rho_b = fd_update(b, jnp.asarray(x), decay=0.81, tail_decay=0.9)
    # Same sketch either way; only the accumulation of the escaped mass differs.
    np.testing.assert_allclose(np.asarray(a.eigvals), np.asarray(b.eigvals), rtol=1e-5)
    assert float(b.tail) > float(a.tail)


def test_nonfinite_input_keeps_state():
    state = fd_init(8, 3)
    state, _ = fd_update(state, jnp.ones((8, 2)), decay=0.9)
    bad = jnp.ones((8, 2)).at[0, 0].set(jnp.nan)
    new, rho = fd_update(state, bad, decay=0.9)
    assert np.isnan(float(rho))
    for a, b in zip(new, state, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_inverse_root_apply_matches_dense():
    d, k = 12, 4
    state = fd_init(d, k)
    for x in stream_of(d, 3, steps=6, seed=5):
        state, _ = fd_update(state, jnp.asarray(x), decay=0.9)
    y = np.random.default_rng(0).standard_normal((d, 5)).astype(np.float32)
    cov = np.asarray(fd_covariance(state), np.float64) + float(state.tail) * np.eye(d)
    top = float(state.eigvals[0] + state.tail)
    w, v = np.linalg.eigh(cov + 1e-3 * top * np.eye(d))
    dense = (v * w**-0.25) @ v.T @ y
    got = fd_inverse_root_apply(state, jnp.asarray(y), 0.25, 1e-3)
    np.testing.assert_allclose(np.asarray(got), dense, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("k", [4, 12])  # low-rank path; exact sketch (k = d: dense path)
def test_inverse_root_apply_on_a_folded_block_acts_on_its_middle_axis(k):
    d = 12
    state = fd_init(d, k)
    for x in stream_of(d, 3, steps=6, seed=6):
        state, _ = fd_update(state, jnp.asarray(x), decay=0.9)
    y = np.random.default_rng(1).standard_normal((3, d, 7)).astype(np.float32)
    got = fd_inverse_root_apply(state, jnp.asarray(y), 0.25, 1e-3)
    # the same columns as a [d, n] matrix
    cols = np.moveaxis(y, 1, 0).reshape(d, -1)
    want = np.asarray(fd_inverse_root_apply(state, jnp.asarray(cols), 0.25, 1e-3))
    want = np.moveaxis(want.reshape(d, 3, 7), 0, 1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_bad_shapes_raise():
    state = fd_init(5, 2)
    with pytest.raises(ValueError, match="x must have shape"):
        fd_update(state, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="rank"):
        fd_init(5, 0)
