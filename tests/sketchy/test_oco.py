"""sketchy.oco against dense NumPy float64 versions of each update rule, plus the drivers.

The references below re-derive every rule from its definition with dense ``d x d`` matrices:
FD (paper Alg. 1) by ``eigh`` of ``Gbar + g g^T``, matrix roots and pseudo-inverses by
``eigh``, the projection by Brent's method on the KKT multiplier. Nothing is shared with the
library but the definitions.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import brentq

from sketchy import oco
from sketchy.oco import online

D, K, STEPS, LR = 7, 3, 12, 0.3


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ----------------------------------------------------------------------------- references


def dense_fd(gbar, row, k):
    """Paper Alg. 1 densely: eigendecompose ``gbar + row row^T``; keep the top ``k`` minus the
    ``(k+1)``-th eigenvalue ``rho``."""
    w, v = np.linalg.eigh(gbar + np.outer(row, row))
    w, v = w[::-1], v[:, ::-1]
    if k >= len(w):
        return gbar + np.outer(row, row), 0.0
    rho = max(w[k], 0.0)
    keep = np.maximum(w[:k] - rho, 0.0)
    return (v[:, :k] * keep) @ v[:, :k].T, rho


def psd_fn(stat, fn):
    """``fn`` applied to the eigenvalues of symmetric ``stat`` (rounding-level ones set to 0)."""
    w, v = np.linalg.eigh((stat + stat.T) / 2)
    w = np.where(w > len(w) * np.finfo(float).eps * w.max(), w, 0.0)
    return (v * fn(w)) @ v.T


def inv_root(w):
    return np.where(w > 0, 1.0 / np.sqrt(np.where(w > 0, w, 1.0)), 0.0)


def inv(w):
    return np.where(w > 0, 1.0 / np.where(w > 0, w, 1.0), 0.0)


def reference_step(name, state, g, t, delta):
    """One step of ``name``: returns ``(s, A, state)`` with ``y = x - s`` and metric ``A``."""
    d = len(g)
    eye = np.eye(d)
    if name == "ogd":
        return LR * g / np.sqrt(t + delta), eye, state
    if name == "diag_adagrad":
        h = state + g * g
        a = np.sqrt(h + delta)
        return LR * np.where(a > 0, g / np.where(a > 0, a, 1), 0), np.diag(a), h
    if name == "full_adagrad":
        stats = state + np.outer(g, g)
        m = stats + delta * eye
        return LR * psd_fn(m, inv_root) @ g, psd_fn(m, np.sqrt), stats
    gbar, tail = state
    scale = {"fd_son": 1 / np.sqrt(LR * np.sqrt(t)), "rfd_son": 1 / np.sqrt(LR * t)}.get(name, 1)
    gbar, rho = dense_fd(gbar, scale * g, K)
    tail += rho
    if name == "s_adagrad":
        m = gbar + (tail + delta) * eye
        s, a = LR * psd_fn(m, inv_root) @ g, psd_fn(m, np.sqrt)
    elif name == "ada_fd":
        a = delta * eye + psd_fn(gbar, np.sqrt)
        s = LR * np.linalg.solve(a, g)
    elif name == "fd_son":
        a = delta * eye + gbar
        s = np.linalg.solve(a, g)
    elif name == "rfd_son":
        a = gbar + (delta + tail / 2) * eye
        s = psd_fn(a, inv) @ g
    return s, a, (gbar, tail)


def reference_projection(a, y, radius):
    """``argmin_{||x|| <= radius} ||x - y||_A`` for positive definite ``a``: ``x = (A + mu I)^-1
    A y`` with ``||x|| = radius`` (Brent's method on ``mu``)."""
    if np.linalg.norm(y) <= radius:
        return y
    x_of = lambda mu: np.linalg.solve(a + mu * np.eye(len(y)), a @ y)
    hi = 1.0
    while np.linalg.norm(x_of(hi)) > radius:
        hi *= 2
    mu = brentq(lambda mu: np.linalg.norm(x_of(mu)) - radius, 0.0, hi, xtol=1e-15, rtol=1e-15)
    return x_of(mu)


def reference_run(name, grads, delta, radius):
    d = grads.shape[1]
    state = {"ogd": None, "diag_adagrad": np.zeros(d), "full_adagrad": np.zeros((d, d))}.get(
        name, (np.zeros((d, d)), 0.0)
    )
    x = np.zeros(d)
    for t, g in enumerate(grads, start=1):
        s, a, state = reference_step(name, state, g, t, delta)
        x = x - s if radius is None else reference_projection(a, x - s, radius)
    return x


FACTORIES = {
    "ogd": lambda delta, radius: oco.ogd(LR, delta=delta, radius=radius),
    "diag_adagrad": lambda delta, radius: oco.diag_adagrad(LR, delta=delta, radius=radius),
    "full_adagrad": lambda delta, radius: oco.full_adagrad(LR, delta=delta, radius=radius),
    "s_adagrad": lambda delta, radius: oco.s_adagrad(LR, K, delta=delta, radius=radius),
    "ada_fd": lambda delta, radius: oco.ada_fd(LR, K, delta=delta, radius=radius),
    "fd_son": lambda delta, radius: oco.fd_son(LR, K, delta=delta, radius=radius),
    "rfd_son": lambda delta, radius: oco.rfd_son(LR, K, delta=delta, radius=radius),
}
NEEDS_DELTA = {"ada_fd", "fd_son"}  # delta > 0 required


def run_tx(tx, grads, x0=None):
    x = jnp.zeros(grads.shape[1]) if x0 is None else x0
    state = tx.init(x)
    for g in grads:
        updates, state = tx.update(jnp.asarray(g), state, x)
        x = optax.apply_updates(x, updates)
    return np.asarray(x)


def gaussian_grads(seed, steps=STEPS, d=D):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(steps, d)) * rng.uniform(0.2, 2.0, size=(steps, 1))


# ----------------------------------------------------------------------------- update rules


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_matches_dense_reference_unconstrained(name):
    grads = gaussian_grads(0)
    delta = 0.05 if name in NEEDS_DELTA else 0.0  # 0: the pseudo-inverse regime where allowed
    want = reference_run(name, grads, delta, None)
    got = run_tx(FACTORIES[name](delta, None), grads)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_matches_dense_reference_projected(name):
    grads = gaussian_grads(1)
    want = reference_run(name, grads, 0.05, 0.4)
    got = run_tx(FACTORIES[name](0.05, 0.4), grads)
    assert np.linalg.norm(got) <= 0.4 * (1 + 1e-12)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


def test_projection_is_the_metric_minimizer():
    rng = np.random.default_rng(2)
    u, _ = np.linalg.qr(rng.normal(size=(D, K)))
    metric = oco.Metric(jnp.asarray(u), jnp.asarray([5.0, 2.0, 0.5]), jnp.asarray(0.1))
    a = (u * np.array([5.0, 2.0, 0.5])) @ u.T + 0.1 * (np.eye(D) - u @ u.T)
    y = 3.0 * rng.normal(size=D)
    x = np.asarray(oco.project_ball(metric, jnp.asarray(y), 1.0))
    np.testing.assert_allclose(x, reference_projection(a, y, 1.0), rtol=1e-9)
    z = rng.normal(size=(2000, D))
    z /= np.maximum(1.0, np.linalg.norm(z, axis=1, keepdims=True))  # feasible points
    cost = lambda p: np.einsum("...i,ij,...j->...", p - y, a, p - y)
    assert cost(x) <= cost(z).min() + 1e-12
    # Inside the ball nothing moves; the pseudo-inverse step leaves null directions alone.
    inside = 0.1 * y / np.linalg.norm(y)
    np.testing.assert_array_equal(oco.project_ball(metric, jnp.asarray(inside), 1.0), inside)
    g = jnp.asarray(rng.normal(size=D))
    no_complement = metric._replace(complement=jnp.asarray(0.0))
    step = np.asarray(oco.pinv_apply(no_complement, g))
    np.testing.assert_allclose(u @ (u.T @ step), step, atol=1e-12)


# ----------------------------------------------------------------------------- S-AdaGrad


@pytest.mark.parametrize("radius", [None, 0.5])
@pytest.mark.parametrize("subspace", [None, 3])
def test_s_adagrad_is_full_adagrad_when_the_sketch_covers_the_dimension(radius, subspace):
    """Paper: with ``l > d`` nothing escapes, ``rho = 0``, and Alg. 2 is full-matrix AdaGrad
    with the pseudo-inverse (gradients in a 3-dim subspace of R^7 keep ``G_t`` singular)."""
    grads = gaussian_grads(3, steps=15)
    if subspace:
        basis = np.linalg.qr(np.random.default_rng(4).normal(size=(D, subspace)))[0]
        grads = grads @ basis @ basis.T
    full = run_tx(oco.full_adagrad(LR, radius=radius), grads)
    for rank in (D, D + 5):
        sketched = run_tx(oco.s_adagrad(LR, rank, radius=radius), grads)
        np.testing.assert_allclose(sketched, full, rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(full))


def test_s_adagrad_keeps_escaped_mass_and_differs_from_ada_fd():
    grads = gaussian_grads(5)
    tx = oco.s_adagrad(LR, K)
    state = tx.init(jnp.zeros(D))
    for g in grads:
        _, state = tx.update(jnp.asarray(g), state)
    assert int(state.count) == STEPS and float(state.sketch.tail) > 0
    assert not np.allclose(run_tx(tx, grads), run_tx(oco.ada_fd(LR, K, delta=1e-3), grads))


# ----------------------------------------------------------------------------- optax contract


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_pytree_params_dtype_and_abstract_init(name):
    tx = FACTORIES[name](0.05, None)
    params = {"b": jnp.zeros((2,)), "w": jnp.zeros((5,))}
    state = jax.eval_shape(tx.init, params)
    floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert all(x.dtype == jnp.float64 for x in floats)
    grads = gaussian_grads(6)
    flat = run_tx(tx, grads)
    state = tx.init(params)
    for g in grads:
        tree = {"b": jnp.asarray(g[:2]), "w": jnp.asarray(g[2:])}
        updates, state = tx.update(tree, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.concatenate([params["b"], params["w"]]), flat, rtol=1e-12)
    f32 = tx.init(jnp.zeros(D, jnp.float32))
    assert all(x.dtype != jnp.float64 for x in jax.tree.leaves(f32))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: oco.s_adagrad(0.0, 4), r"learning_rate must be in \(0.0, inf\]"),
        (lambda: oco.s_adagrad(1.0, 0), "rank must be an integer >= 1"),
        (lambda: oco.s_adagrad(1.0, 4, delta=-1.0), r"delta must be in \[0.0, inf\]"),
        (lambda: oco.ada_fd(1.0, 4, delta=0.0), r"delta must be in \(0.0, inf\]"),
        (lambda: oco.fd_son(1.0, 4, delta=-2.0), r"delta must be in \(0.0, inf\]"),
        (lambda: oco.rfd_son(-1.0, 4), "learning_rate"),
        (lambda: oco.ogd(1.0, radius=0.0), r"radius must be in \(0.0, inf\]"),
        (lambda: oco.diag_adagrad(float("nan")), "learning_rate"),
        (lambda: oco.full_adagrad(1.0, delta=-1e-3), "delta"),
        (lambda: oco.s_adagrad(1.0, 4, fd_method="qr"), "fd_method must be"),
    ],
)
def test_bad_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_projection_needs_params():
    tx = oco.ogd(1.0, radius=1.0)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))


# ----------------------------------------------------------------------------- drivers


def test_logistic_loss_and_grad():
    w, x = jnp.asarray([0.3, -1.2, 2.0]), jnp.asarray([1.0, 0.5, -0.25])
    for y in (1.0, -1.0):
        loss, grad = online.logistic_loss_and_grad(w, x, y)
        want = np.log1p(np.exp(-y * float(w @ x)))
        np.testing.assert_allclose(loss, want, rtol=1e-12)
        auto = jax.grad(lambda v, y=y: online.logistic_loss_and_grad(v, x, y)[0])(w)
        np.testing.assert_allclose(grad, auto, rtol=1e-12)


def test_run_logistic_grid_matches_separate_runs():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(size=(40, 4)), np.ones((40, 1))], axis=1)
    y = np.where(x[:, 0] + 0.3 * rng.normal(size=40) > 0, 1.0, -1.0)
    make = functools.partial(oco.ada_fd, rank=2)
    hp = {"learning_rate": jnp.asarray([0.1, 1.0]), "delta": jnp.asarray([0.5, 0.01])}
    losses, errors = online.run_logistic(make, hp, x, y)
    assert losses.shape == errors.shape == (2, 40)
    for h in range(2):
        tx = make(learning_rate=float(hp["learning_rate"][h]), delta=float(hp["delta"][h]))
        w, state, total = jnp.zeros(5), None, 0.0
        state = tx.init(w)
        for xi, yi in zip(x, y, strict=True):
            loss, grad = online.logistic_loss_and_grad(w, jnp.asarray(xi), yi)
            total += float(loss)
            updates, state = tx.update(grad, state, w)
            w = optax.apply_updates(w, updates)
        np.testing.assert_allclose(float(losses[h].sum()), total, rtol=1e-10)
    assert float(errors[0, 0]) == float(y[0] > 0)  # w_1 = 0 predicts negative


def test_fit_exponent_recovers_a_power_law():
    horizons = np.array([64, 128, 512, 4096])
    assert online.fit_exponent(horizons, 3.0 * horizons**0.75) == pytest.approx(0.75, abs=1e-12)


def test_run_linear_regret_definition_and_batched_sequences():
    """Regret = sum_t <x_t, g_t> + R ||sum_t g_t|| (x_t played before g_t is seen), and a
    ``[S, T, d]`` batch gives the same numbers as ``S`` separate runs."""
    rng = np.random.default_rng(8)
    grads = rng.normal(size=(2, 30, 5))
    horizons = np.array([1, 7, 30])
    make = functools.partial(oco.s_adagrad, rank=2, radius=0.7)
    hp = {"learning_rate": jnp.asarray([0.05, 0.5])}
    batched = np.asarray(online.run_linear_regret(make, hp, jnp.asarray(grads), 0.7, horizons))
    assert batched.shape == (2, 2, 3)
    for s in range(2):
        single = online.run_linear_regret(make, hp, jnp.asarray(grads[s]), 0.7, horizons)
        np.testing.assert_allclose(batched[s], single, rtol=1e-12, atol=1e-12)
    for h, lr in enumerate([0.05, 0.5]):
        tx = make(learning_rate=lr)
        update = jax.jit(tx.update)
        for s in range(2):
            x, played = jnp.zeros(5), []
            state = tx.init(x)
            for g in grads[s]:
                played.append(float(x @ g))
                updates, state = update(jnp.asarray(g), state, x)
                x = optax.apply_updates(x, updates)
            for i, t in enumerate(horizons):
                want = sum(played[:t]) + 0.7 * np.linalg.norm(grads[s, :t].sum(0))
                np.testing.assert_allclose(batched[s, h, i], want, rtol=1e-10)


def test_observation2_gradients_signed_and_unsigned():
    key = jax.random.key(0)
    signed = np.asarray(online.observation2_gradients(key, 4000, 4, 6, jnp.float64))
    unsigned = np.asarray(online.observation2_gradients(key, 4000, 4, 6, jnp.float64, signed=False))
    assert signed.shape == unsigned.shape == (4000, 6)
    directions = np.unique(np.round(unsigned, 12), axis=0)
    assert len(directions) == 4
    np.testing.assert_allclose(directions @ directions.T, np.eye(4), atol=1e-12)
    # Same directions, each round's sign flipped at random: g = eps v, eps in {-1, +1}.
    eps = np.sum(signed * unsigned, axis=1)
    np.testing.assert_allclose(np.abs(eps), 1.0, atol=1e-12)
    assert 0.45 < np.mean(eps > 0) < 0.55
    # Zero mean (E||mean||^2 = 1/n) vs the unsigned mean of norm 1/sqrt(r) = 0.5.
    assert np.linalg.norm(signed.mean(0)) < 0.05
    assert np.linalg.norm(unsigned.mean(0)) == pytest.approx(0.5, abs=0.05)


def _observation2_regrets(make, hp, seeds, r, horizons, signed=True):
    """``([seeds, H, horizons] regrets, [seeds, horizons] comparator terms ||sum g_t||)``."""
    grads = jnp.stack(
        [
            online.observation2_gradients(
                jax.random.key(s), int(horizons[-1]), r, dtype=jnp.float64, signed=signed
            )
            for s in seeds
        ]
    )
    hp = {k: jnp.asarray(v) for k, v in hp.items()}
    regrets = np.asarray(online.run_linear_regret(make, hp, grads, 1.0, horizons))
    comparator = np.linalg.norm(np.cumsum(np.asarray(grads), 1)[:, horizons - 1], axis=2)
    return regrets, comparator


OBS2_RUNS = {  # small grids around each method's best region on r = 16, unit ball
    "s_adagrad": (
        functools.partial(oco.s_adagrad, rank=3, radius=1.0),
        {"learning_rate": np.geomspace(1e-2, 10.0, 4)},
    ),
    "ada_fd": (
        functools.partial(oco.ada_fd, rank=3, radius=1.0),
        {
            "learning_rate": np.repeat(np.geomspace(1e-2, 10.0, 4), 2),
            "delta": np.tile([1e-2, 10.0], 4),
        },
    ),
}


def test_observation2_signed_instance_gives_every_method_the_same_regret():
    """Signed Observation 2 instance (``g_t = eps_t v_{i_t}``, ``E g_t = 0``): ``x_t`` depends
    on ``g_1..g_{t-1}`` only, so ``E <x_t, g_t> = 0`` and every method's expected regret is the
    comparator term ``R E||sum_t g_t|| ~ sqrt(T)``. Hence no exponent gap between fixed-delta
    Ada-FD and S-AdaGrad (sketch l = 4 < r = 16) appears on it, tuned per ``T`` or not; the
    paper's T^(3/4) vs T^(1/2) separation cannot be shown on this instance. (Measured over six
    sets of 8 seeds: exponents 0.47-0.56, gaps -0.02..0.03.)"""
    r, seeds, horizons = 16, range(8), np.array([64, 128, 256, 512, 1024, 2048])
    exponents = {}
    for name, (make, hp) in OBS2_RUNS.items():
        regrets, comparator = _observation2_regrets(make, hp, seeds, r, horizons)
        # The method's own loss sum_t <x_t, g_t> averages to ~0 for every setting: at most
        # 0.4 of the comparator term (measured <= 0.23 over six seed sets; on the unsigned
        # instance it is about -0.9 of it).
        own = (regrets - comparator[:, None]).mean(0)
        assert np.all(np.abs(own) < 0.4 * comparator.mean(0)), (name, own / comparator.mean(0))
        exponents[name] = online.fit_exponent(horizons, regrets.mean(0).min(0))
    assert all(0.4 < e < 0.6 for e in exponents.values()), exponents
    assert abs(exponents["ada_fd"] - exponents["s_adagrad"]) < 0.1, exponents


def test_observation2_unsigned_ada_fd_regret_grows_faster_than_s_adagrad():
    """Unsigned instance (``g_t = v_{i_t}``, mean of norm ``1 / sqrt(r)``): there the methods
    do differ. Fixed-delta Ada-FD is constant-step in the directions outside its sketch, and its
    tuned regret grows with a larger exponent than S-AdaGrad's, whose dynamic diagonal
    ``rho_{1:t}`` decays its steps. (Measured gaps 0.20-0.24 over six seed pairs; the margin
    asked is 0.1.)"""
    r, seeds, horizons = 16, range(2), np.array([64, 128, 256, 512, 1024, 2048])
    exponents = {}
    for name, (make, hp) in OBS2_RUNS.items():
        regrets, _ = _observation2_regrets(make, hp, seeds, r, horizons, signed=False)
        exponents[name] = online.fit_exponent(horizons, regrets.mean(0).min(0))
    assert exponents["ada_fd"] > exponents["s_adagrad"] + 0.1, exponents
