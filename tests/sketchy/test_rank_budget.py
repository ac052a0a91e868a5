"""Rank budget building blocks: FD truncation keeps the sandwich; greedy rank allocation."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchy.frequent_directions import FDState, fd_covariance, fd_init, fd_update
from sketchy.memory import sketchy_floats
from sketchy.rank_budget import (
    FactorSpectrum,
    allocate_ranks,
    budget_of_uniform_rank,
    captured_mass,
    factor_spectrum,
    fd_truncate,
    marginal_gains,
    rank_cost,
)

D, K1, B2, STEPS = 64, 32, 0.99, 300
# float32 FD: each step's SVD is exact to ~eps * lambda_max (eps = 1.2e-7), and the decayed
# sum of those errors runs over ~1 / (1 - b2) = 100 steps: ~1e-5 lambda_max (measured: down to
# -2.5e-5 on the rank-8 stream, whose null space makes the bounds tight). 1e-4 leaves 4x.
REL_TOL = 1e-4


def make_stream(kind, steps, seed, n=2):
    rng = np.random.default_rng(seed)
    if kind == "random":  # full rank, decaying spectrum (like gradient covariances)
        mix = np.geomspace(1.0, 0.05, D)[:, None] * np.linalg.qr(rng.standard_normal((D, D)))[0]
    else:  # exactly rank 8
        mix = rng.standard_normal((D, 8)) * np.geomspace(1.0, 0.1, 8)[None, :]
    return [(mix @ rng.standard_normal((mix.shape[1], n))).astype(np.float32) for _ in range(steps)]


_update = jax.jit(lambda s, x: fd_update(s, x, decay=B2)[0])


def run(state, cov, stream):
    """FD at the state's rank and the exact float64 EMA ``G = sum b2^(t-s) x_s x_s^T``."""
    for x in stream:
        state = _update(state, jnp.asarray(x))
        cov = B2 * cov + x.astype(np.float64) @ x.T.astype(np.float64)
    return state, cov


def sandwich_margins(state, cov):
    """``(min eig(G - Gbar), min eig(Gbar + tail I - G))`` relative to ``lambda_max(G)``."""
    gbar = np.asarray(fd_covariance(state), np.float64)
    top = np.linalg.eigvalsh(cov)[-1]
    lower = np.linalg.eigvalsh(cov - gbar)[0]
    upper = np.linalg.eigvalsh(gbar + float(state.tail) * np.eye(D) - cov)[0]
    return lower / top, upper / top


@functools.cache
def warm(kind):
    """A rank-K1 sketch of STEPS steps of the stream and the exact covariance it tracks."""
    return run(fd_init(D, K1), np.zeros((D, D)), make_stream(kind, STEPS, 0))


@pytest.mark.parametrize("k2", [4, 16])
@pytest.mark.parametrize("kind", ["random", "rank8"])
def test_truncation_keeps_sandwich_and_fd_continues(kind, k2):
    state, cov = warm(kind)
    assert min(sandwich_margins(state, cov)) >= -REL_TOL  # the warm sketch itself
    cut = fd_truncate(state, k2)
    assert cut.eigvecs.shape == (D, k2) and cut.eigvals.shape == (k2,)
    low, up = sandwich_margins(cut, cov)
    print(f"{kind} k2={k2}: margins after cut lower={low:.2e} upper={up:.2e}")
    assert low >= -REL_TOL and up >= -REL_TOL
    rho = float(state.eigvals[k2])
    np.testing.assert_allclose(float(cut.tail), float(state.tail) + rho, rtol=1e-6)
    # The preconditioner's bound Gbar + tail I is unchanged on the kept span.
    kept = np.asarray(cut.eigvals[cut.eigvals > 0] + cut.tail)
    np.testing.assert_allclose(kept, (state.eigvals + state.tail)[: kept.size], rtol=1e-5)
    # 100 more FD steps at rank k2 from the truncated sketch: FD's guarantee carries on.
    later, cov2 = run(cut, cov, make_stream(kind, 100, 1))
    low2, up2 = sandwich_margins(later, cov2)
    print(f"{kind} k2={k2}: margins after 100 more steps lower={low2:.2e} upper={up2:.2e}")
    assert low2 >= -REL_TOL and up2 >= -REL_TOL


def test_low_rank_stream_truncation_moves_nothing():
    state, _ = warm("rank8")
    top = float(state.eigvals[0])
    for k2 in (8, 16):
        cut = fd_truncate(state, k2)
        change = abs(float(cut.tail) - float(state.tail)) / top
        print(f"rank8 k2={k2}: tail {float(state.tail) / top:.1e} -> change {change:.1e} (rel)")
        assert change <= 1e-6
        np.testing.assert_allclose(fd_covariance(cut), fd_covariance(state), atol=1e-5 * top)


def test_dropping_without_tail_breaks_upper_bound():
    """The mutation: cut the columns but move no mass to the tail. Must be caught."""
    state, cov = warm("random")
    k2 = 4
    wrong = FDState(state.eigvecs[:, :k2], state.eigvals[:k2], state.tail)
    low, up = sandwich_margins(wrong, cov)
    print(f"wrong truncation: lower={low:.2e} upper={up:.2e}")
    assert low >= -REL_TOL and up < -100 * REL_TOL
    assert min(sandwich_margins(fd_truncate(state, k2), cov)) >= -REL_TOL


def test_truncate_edges():
    u = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 4)))[0].astype(np.float32)
    # Non-descending with a zero column: sorted first, rho = 1, the zero stays out.
    state = FDState(jnp.asarray(u), jnp.asarray([1.0, 3.0, 0.0, 2.0]), jnp.asarray(0.5))
    cut = fd_truncate(state, 2)
    np.testing.assert_allclose(cut.eigvals, [2.0, 1.0])
    np.testing.assert_allclose(np.abs(cut.eigvecs), np.abs(u[:, [1, 3]]), atol=1e-6)
    assert float(cut.tail) == pytest.approx(1.5)
    # Ties: the deflated eigenvalue is 0 and its eigenvector is zeroed as in fd_update.
    tied = fd_truncate(state._replace(eigvals=jnp.asarray([3.0, 2.0, 2.0, 0.0])), 2)
    np.testing.assert_allclose(tied.eigvals, [1.0, 0.0])
    assert np.all(np.asarray(tied.eigvecs[:, 1]) == 0)
    # (k2+1)-th eigenvalue zero: nothing moves.
    assert float(fd_truncate(state, 3).tail) == pytest.approx(0.5)
    assert fd_truncate(state, 4) is state
    for bad in (0, 5, 2.0):
        with pytest.raises(ValueError, match="k2 must be an integer"):
            fd_truncate(state, bad)


def test_truncate_batched_and_jit():
    rng = np.random.default_rng(1)
    vecs = np.stack([np.linalg.qr(rng.standard_normal((8, 5)))[0] for _ in range(3)])
    lam = -np.sort(-rng.uniform(0, 1, (3, 5)), axis=-1)
    state = FDState(jnp.asarray(vecs, jnp.float32), jnp.asarray(lam, jnp.float32), jnp.ones(3))
    batched = jax.jit(fd_truncate, static_argnums=1)(state, 2)
    for b in range(3):
        one = fd_truncate(jax.tree.map(lambda a, b=b: a[b], state), 2)
        for got, want in zip(batched, one, strict=True):
            np.testing.assert_allclose(got[b], want, rtol=1e-6)
    assert factor_spectrum(batched).nblocks == 3 and factor_spectrum(batched).eigvals.shape == (
        3,
        2,
    )


# ---- allocate_ranks ----


def spec(lam, d=None, nblocks=1, tail=0.0):
    lam = np.asarray(lam, np.float64)
    return FactorSpectrum(d or lam.shape[-1], nblocks, lam, np.asarray(tail))


def test_flat_spectrum_gets_more_rank_than_steep_one_whatever_the_scale():
    k = 32
    factors = {
        "steep": spec(1e6 * 0.5 ** np.arange(k), d=64),  # huge gradients, few directions
        "flat": spec(1e-6 * np.ones(k), d=64, tail=1e-6),
    }
    budget = budget_of_uniform_rank(factors, 12)
    ranks = allocate_ranks(factors, budget)
    assert ranks["flat"] > ranks["steep"] >= 5, ranks  # 2^-5 < 1/64: steep's gains run out
    assert marginal_gains(factors["steep"])[: ranks["steep"]].sum() > 0.95


def test_gain_is_per_word_and_a_closed_factor_does_not_stop_the_rest():
    big = spec([0.6, 0.2, 0.2], d=64)  # next direction: share 0.2 for 65 words
    base = rank_cost(big, 1) + 1 * 9 + 1  # big at rank 1, small at rank 1 (d = 8)
    # Per word: small's 0.1-share directions (9 words) beat big's 0.2 (65 words).
    factors = {"big": big, "small": spec([0.3] + [0.1] * 7, d=8)}
    assert allocate_ranks(factors, base + 65) == {"big": 1, "small": 8}
    # Big's direction (next in line) misses by one word; small's cheap tail still fits.
    factors["small"] = spec([0.3, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01], d=8)
    assert allocate_ranks(factors, base + 64) == {"big": 1, "small": 8}


@pytest.mark.parametrize("seed", range(5))
def test_budget_respected_and_nearly_used(seed):
    rng = np.random.default_rng(seed)
    factors = {}
    for i in range(6):
        d, nb = int(rng.choice([16, 48, 128])), int(rng.integers(1, 5))
        lam = np.sort(rng.lognormal(0, 2, (nb, 24)))[:, ::-1] * 10.0 ** rng.integers(-4, 4)
        factors[("w", i)] = spec(lam, d=d, nblocks=nb, tail=lam[:, -1] * 0.1)
    budget = budget_of_uniform_rank(factors, 8)
    ranks = allocate_ranks(factors, budget, min_rank=2)
    used = sum(rank_cost(factors[k], r) for k, r in ranks.items())
    open_steps = [f.nblocks * (f.d + 1) for k, f in factors.items() if ranks[k] < 24]
    assert all(2 <= r <= 24 for r in ranks.values())
    assert used <= budget and budget - used < max(open_steps, default=1)


def test_identical_spectra_give_uniform_rank():
    lam = np.geomspace(1.0, 1e-3, 32)
    factors = {(f"layer{i}", ax): spec(lam, d=96, nblocks=2) for i in range(4) for ax in (0, 1)}
    for rank in (1, 7, 16, 32):
        ranks = allocate_ranks(factors, budget_of_uniform_rank(factors, rank))
        assert set(ranks.values()) == {rank}
    # Also for a flat spectrum (ties within a factor): lower ranks are served first.
    flat = {i: spec(np.ones(10), d=20) for i in range(3)}
    assert set(allocate_ranks(flat, budget_of_uniform_rank(flat, 4)).values()) == {4}


def test_budget_matches_memory_accounting():
    factors = {"rows": spec(np.ones(8), d=40, nblocks=3), "cols": spec(np.ones(8), d=24, nblocks=3)}
    # A blocked 120 x 72 matrix in 40 x 24 blocks: 9 blocks, but per factor 3 are listed.
    assert budget_of_uniform_rank(factors, 16) == 3 * (40 * 16 + 17) + 3 * (24 * 16 + 17)
    whole = {"rows": spec(np.ones(8), d=40), "cols": spec(np.ones(8), d=24)}
    assert budget_of_uniform_rank(whole, 30) == sketchy_floats(40, 24, 30)["statistics"]


def brute_force(factors, budget):
    keys = list(factors)
    best = -1.0
    for combo in itertools.product(*[range(1, factors[k].eigvals.shape[-1] + 1) for k in keys]):
        ranks = dict(zip(keys, combo, strict=True))
        if sum(rank_cost(factors[k], r) for k, r in ranks.items()) <= budget:
            best = max(best, captured_mass(factors, ranks))
    return best


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("equal_costs", [False, True])
def test_greedy_against_brute_force(seed, equal_costs):
    rng = np.random.default_rng(seed)
    factors = {}
    for i in range(3):
        d = 6 if equal_costs else int(rng.choice([3, 5, 6, 8]))
        nb = 1 if equal_costs else int(rng.integers(1, 4))
        lam = np.sort(rng.exponential(1.0, (nb, min(d, 6))) ** 3)[:, ::-1]
        factors[i] = spec(lam, d=d, nblocks=nb, tail=rng.uniform(0, 0.1, nb))
    low, high = budget_of_uniform_rank(factors, 1), budget_of_uniform_rank(factors, 6)
    budget = int(rng.integers(low, high + 1))
    ranks = allocate_ranks(factors, budget)
    got, opt = captured_mass(factors, ranks), brute_force(factors, budget)
    assert got <= opt + 1e-12
    if equal_costs:
        assert got == pytest.approx(opt, abs=1e-12)
    else:  # the fractional-knapsack gap: one more direction of some factor
        caps = {k: f.eigvals.shape[-1] for k, f in factors.items()}
        nxt = [marginal_gains(f)[ranks[k]] for k, f in factors.items() if ranks[k] < caps[k]]
        assert opt <= got + max(nxt, default=0.0) + 1e-12


def test_budget_too_small_and_bad_bounds():
    factors = {"a": spec(np.ones(4), d=10), "b": spec(np.ones(4), d=6, nblocks=2)}
    need = (10 * 2 + 3) + 2 * (6 * 2 + 3)
    with pytest.raises(ValueError, match=f"below the {need} words that min_rank=2") as err:
        allocate_ranks(factors, need - 1, min_rank=2)
    assert "\n" not in str(err.value)
    assert allocate_ranks(factors, need, min_rank=2) == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="min_rank"):
        allocate_ranks(factors, 10**6, min_rank=3, max_rank=2)
    # min_rank above a factor's dimension is clamped to it; max_rank caps.
    tiny = {"t": spec(np.ones(2), d=2), "a": spec(np.ones(4), d=10)}
    assert allocate_ranks(tiny, 10**6, min_rank=3, max_rank=3) == {"t": 2, "a": 3}


def test_zero_gain_directions_are_not_bought():
    factors = {"lowrank": spec([5.0, 1.0, 0.0, 0.0], d=8), "full": spec([1.0, 1.0], d=8)}
    ranks = allocate_ranks(factors, 10**6)
    assert ranks == {"lowrank": 2, "full": 2}
