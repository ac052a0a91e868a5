"""Sketch health (sketchy/sketch_health.py) against dense EMA covariances of known spectrum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sketchy
from sketchy import sketch_health, spectra
from sketchy.frequent_directions import FDState, fd_init, fd_update

D, BETA, COLS, STEPS = 32, 0.99, 4, 400


def stream(spectrum, seed=0, cols=COLS):
    """``STEPS`` gradients ``[D, cols]`` with columns ~ N(0, Q diag(spectrum) Q^T)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    a = q * np.sqrt(np.asarray(spectrum, np.float64))
    return np.einsum("ij,tjn->tin", a, rng.standard_normal((STEPS, D, cols)))


def sketch_and_dense(xs, k, method="eigh"):
    """The FD sketch (float32) and the exact dense EMA covariance (float64) of ``xs``."""

    def step(state, x):
        return fd_update(state, x, decay=BETA, method=method)[0], None

    state, _ = jax.lax.scan(step, fd_init(D, k), jnp.asarray(xs, jnp.float32))
    cov = np.zeros((D, D))
    for x in xs:
        cov = BETA * cov + x @ x.T
    return state, np.linalg.eigvalsh(cov)


SPECTRA = {
    "spikes_on_a_floor": np.r_[np.full(4, 10.0), np.ones(D - 4)],
    "harmonic": 1.0 / np.arange(1, D + 1),
    "flat": np.ones(D),
}


@pytest.mark.parametrize("k", [4, 8, 16])
@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_escaped_share_is_bracketed_by_the_dense_spectrum(name, k):
    """FD's guarantee ``Gbar <= C <= Gbar + tail I`` and its tail bound bracket the share by
    functions of the dense spectrum alone (``escaped_share_bounds``). The bracket holds
    exactly in exact arithmetic; 1e-3 covers float32: ``STEPS`` steps of relative rounding
    ~1e-7 in ``tail`` and ``lam`` move a share in [0, 1) by at most ~1e-4."""
    state, mu = sketch_and_dense(stream(SPECTRA[name]), k)
    share = float(sketch_health.escaped_share(state))
    low, high = sketch_health.escaped_share_bounds(mu, k)
    assert low - 1e-3 <= share <= high + 1e-3, (low, share, high)
    assert 0.1 < low and high < 0.98  # informative: not [0, 1]
    tail = float(state.tail)
    # tail / lambda_max of the bound: lambda_1(C) <= lam_1 + tail <= lambda_1(C) + tail.
    ratio = float(sketch_health.tail_over_lambda_max(state))
    assert tail / (mu.max() + tail) * (1 - 1e-3) <= ratio <= tail / mu.max() * (1 + 1e-3)


@pytest.mark.parametrize("k", [4, 16])
def test_the_trace_is_the_dense_trace_plus_the_escaped_mass_on_rank_one_updates(k):
    """With one column per step each FD step drops exactly ``k + 1`` times its escaped mass,
    so ``tr C = sum lam + (k + 1) tail`` (decay applied to both sides alike) and the share is
    ``(d - k) tail / (tr C + (d - k - 1) tail)``: the dense trace fixes the denominator.
    Tolerance 1e-4 relative: float32 sums over ``STEPS`` steps."""
    state, mu = sketch_and_dense(stream(SPECTRA["harmonic"], cols=1), k)
    tail, total = float(state.tail), mu.sum()
    np.testing.assert_allclose(float(jnp.sum(state.eigvals)) + (k + 1) * tail, total, rtol=1e-4)
    dense_share = (D - k) * tail / (total + (D - k - 1) * tail)
    np.testing.assert_allclose(float(sketch_health.escaped_share(state)), dense_share, rtol=1e-4)


@pytest.mark.parametrize("method", ["eigh", "svd"])
def test_an_exactly_low_rank_stream_escapes_nothing(method):
    """Rank-3 gradients, rank-8 sketch: FD is exact (nothing is ever deflated), so the share
    is 0 up to the rounding of the escaped mass (eps^2 lambda_max per step, ~1e-12)."""
    spectrum = np.r_[[5.0, 2.0, 1.0], np.zeros(D - 3)]
    state, mu = sketch_and_dense(stream(spectrum), 8, method)
    assert float(sketch_health.escaped_share(state)) < 1e-6
    assert float(sketch_health.tail_over_lambda_max(state)) < 1e-6
    # ...while rank 2 < 3 does lose mass, within the dense bracket.
    state, mu = sketch_and_dense(stream(spectrum), 2, method)
    low, high = sketch_health.escaped_share_bounds(mu, 2)
    assert 1e-3 < low - 1e-3 <= float(sketch_health.escaped_share(state)) <= high + 1e-3


def test_the_formula_on_a_hand_made_state():
    """``(d - k) tail / (sum lam + d tail)``, ``tail / (lam_1 + tail)``; 0/0 -> 0; exact -> 0."""
    state = FDState(
        jnp.zeros((2, 10, 3)), jnp.array([[4.0, 2.0, 1.0], [0, 0, 0]]), jnp.array([0.5, 0])
    )
    np.testing.assert_allclose(sketch_health.escaped_share(state), [7 * 0.5 / (7 + 5), 0.0])
    np.testing.assert_allclose(sketch_health.tail_over_lambda_max(state), [0.5 / 4.5, 0.0])
    exact = FDState(jnp.zeros((3, 3)), jnp.array([3.0, 1.0, 0.0]), jnp.array(0.0))
    assert float(sketch_health.escaped_share(exact)) == 0.0


def test_suggested_rank_is_the_next_power_of_two_of_twice_the_rank_capped_at_d():
    assert [sketch_health.suggest_rank(k, 1024) for k in (1, 2, 3, 8, 100, 256)] == [
        2, 4, 8, 16, 256, 512,
    ]  # fmt: skip
    assert sketch_health.suggest_rank(256, 300) == 300


def test_block_owners_and_the_worst_parameter():
    """The probe's owners agree with ``spectra.owned_blocks`` for every parameter (``a`` and
    ``b`` share a block shape, ``c`` is graft-only), and the summary names ``b``, the one fed
    full-rank gradients, as the worst; ``a``'s gradients, all along one rank-1 matrix, escape
    nothing."""
    shapes = {"a": (8, 6), "b": (8, 6), "c": (5,), "d": (12, 4)}
    params = {n: jnp.zeros(s) for n, s in shapes.items()}
    tx = sketchy.sketchy(1e-3, rank=2, block_size=4, update_freq=1)
    owners = sketch_health.block_owners(tx, params)
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert names == ["['a']", "['b']", "['c']", "['d']"]
    for i, name in enumerate(names):
        if name != "['c']":
            masks = spectra.owned_blocks(tx, params, name)
            assert [list(o == i) for o in owners] == [list(m) for m in masks]
    assert all((o >= 0).all() for o in owners)  # no padding blocks in this layout
    rng = np.random.default_rng(0)
    state = tx.init(params)
    u, v = rng.standard_normal((8, 1)), rng.standard_normal((1, 6))
    for _ in range(5):
        grads = {
            "a": rng.standard_normal() * u @ v,
            "b": rng.standard_normal((8, 6)),
            "c": rng.standard_normal(5),
        }
        grads["d"] = 0.1 * rng.standard_normal((12, 4))
        _, state = tx.update(jax.tree.map(jnp.asarray, grads), state, params)
    out = sketch_health.health_summary(state, owners, names)
    assert out["escaped_share_max_path"] == "['b']" and out["escaped_share_max_param"] == 1
    assert 0 < out["escaped_share_mean"] < out["escaped_share_max"] < 1
    assert 0 < out["tail_over_lambda_max_max"] < 1
    assert (out["escaped_share_max_dim"], out["escaped_share_max_rank"]) in [(4, 2), (3, 2)]
    per_block = [
        np.asarray(sketch_health.escaped_share(s)) for _, s in sketch_health.fd_states(state)
    ]
    a_blocks = np.concatenate([p[o == 0] for p, o in zip(per_block, owners, strict=True)])
    assert a_blocks.max() < 1e-5


def test_no_sketches_no_summary():
    params = {"w": jnp.zeros((6, 4))}
    tx = sketchy.shampoo(1e-3, update_freq=1)
    assert sketch_health.fd_states(tx.init(params)) == []
    assert not sketch_health.has_sketches(jax.eval_shape(tx.init, params))
    assert sketch_health.has_sketches(jax.eval_shape(sketchy.sketchy(1e-3, rank=2).init, params))
    assert sketch_health.health_summary(tx.init(params), [], ["['w']"]) == {}
