"""What the other option tests leave open, found by mutation testing (tests/mutation/):

- Shampoo and Sketchy without grafting and with an absolute epsilon, where the overall
  scale of the statistics is not normalized away (with grafting and a relative epsilon a
  statistic multiplied by any constant gives the same update, so a wrong EMA weight cannot
  show), against the dense float64 reference of ``test_dense_reference.py``; Shampoo with
  ``b2 = 1`` (sums, as in AdaGrad);
- each validated argument on both sides of its boundary.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_dense_reference import (
    KAPPA_MAX,
    RTOL,
    DenseOptimizer,
    assert_matches,
    gradient_stream,
    max_rel_error,
    run_library,
    run_reference,
)

import sketchy

# "w" is cut into two 6 x 7 blocks (block_size 8), "t3" is an order-3 block, "bias" is
# graft-only (its update is the graft direction: with graft="none", the gradient).
SHAPES = {"w": (12, 7), "t3": (4, 5, 6), "bias": (6,)}
PLANS = {"w": ((12, 7), (6, 7)), "t3": ((4, 5, 6), (4, 5, 6)), "bias": None}
STEPS, FREQ, START = 7, 3, 3  # roots / FD steps at counts 0, 3, 6; preconditioned from 3


def kronecker_state(state) -> sketchy.KroneckerState:
    is_kron = lambda x: isinstance(x, sketchy.KroneckerState)  # noqa: E731
    (kron,) = [x for x in jax.tree.leaves(state, is_leaf=is_kron) if is_kron(x)]
    return kron


@pytest.mark.parametrize(
    ("kind", "b2", "eps", "scale"),
    [
        ("shampoo", 0.6, 0.5, 1.0),
        ("shampoo", 1.0, 5.0, 1.0),
        ("shampoo", 0.6, 0.005, 0.1),  # statistics far below 1
        ("sketchy", 0.6, 0.5, 1.0),
    ],
)
def test_unnormalized_scale_matches_dense_reference(kind, b2, eps, scale):
    """graft="none" and an absolute eps (large enough for kappa <= 100): the update is the
    preconditioned gradient itself, so the statistics' scale (Shampoo's ``1 - b2`` weight,
    or 1 for ``b2 = 1``; Sketchy's undamped ``G G^T``) and the floor are seen directly. A
    statistic 2x too large changes the update by up to ``2^(-1/4)`` (16%), far above RTOL
    (module doc of test_dense_reference.py; kappa <= 100 is asserted on the reference's
    roots)."""
    grads = gradient_stream(STEPS, seed=8, scale=scale, shapes=SHAPES)
    options = dict(b2=b2, eps=eps, relative_eps=False, graft="none", update_freq=FREQ)
    if kind == "sketchy":
        tx = sketchy.sketchy(
            0.1, rank=3, block_size=8, start_preconditioning_step=START, fd_method="svd", **options
        )
    else:
        tx = sketchy.shampoo(0.1, block_size=8, start_preconditioning_step=START, **options)
    lib, state = run_library(tx, grads)
    assert int(kronecker_state(state).failures) == 0
    ref_opt = DenseOptimizer(
        kind,
        rank=3,
        b2=b2,
        eps=eps,
        relative_eps=False,
        graft="none",
        update_freq=FREQ,
        start=START,
        plans=PLANS,
    )
    ref = run_reference(ref_opt, grads)
    assert max(ref_opt.kappas) <= KAPPA_MAX
    assert_matches(lib, ref)
    # Premise: the scale is visible here (relative eps would hide it; grafting too).
    doubled = DenseOptimizer(
        kind, rank=3, b2=b2, eps=2 * eps, relative_eps=False, graft="none", update_freq=FREQ,
        start=START, plans=PLANS,
    )  # fmt: skip
    # eps 2x with the same statistics = statistics 1/2 of the right ones, up to a factor
    # 2^(1/4) overall: either way the updates move by far more than RTOL.
    assert max_rel_error(run_reference(doubled, grads), ref, names=["w", "t3"]) > 100 * RTOL


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        (sketchy.sketchy, {"fd_chunk": 0}, "fd_chunk must be"),
        (sketchy.sketchy, {"fd_chunk": 2.5}, "fd_chunk must be"),
        (sketchy.sketchy, {"fd_method": "qr"}, "fd_method must be"),
        (sketchy.sketchy, {"eps": -1e-9}, "eps must be >= 0"),
        (sketchy.shampoo, {"eps": -1e-9}, "eps must be >= 0"),
        (sketchy.sketchy, {"rank": 2.0}, "rank must be"),
        (sketchy.shampoo, {"statistics_freq": 0}, "statistics_freq must be"),
        (sketchy.shampoo, {"statistics_freq": 1.5}, "statistics_freq must be"),
        (sketchy.shampoo, {"update_freq": 2.0}, "update_freq must be"),
        (sketchy.sketchy, {"max_merged_dim": 0}, "max_merged_dim must be"),
        (sketchy.sketchy, {"start_preconditioning_step": -1}, "start_preconditioning_step"),
        (sketchy.sketchy, {"max_precond_dim": 0}, "max_precond_dim must be"),
        (sketchy.sketchy, {"weight_decay": -0.1}, "weight_decay must be"),
        (sketchy.sketchy, {"b1": -0.1}, r"b1 must be in \[0, 1\)"),
        (sketchy.sketchy, {"graft": "rmsprop_uncorrected", "b2": 1.0}, "needs b2 < 1"),
        (sketchy.sketchy, {"graft": "rmsprop_normalized", "b2": 1.0}, "needs b2 < 1"),
    ],
)
def test_bad_option_raises(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(1e-3, **kwargs)


@pytest.mark.parametrize(
    ("make", "kwargs"),
    [
        (sketchy.sketchy, {"fd_chunk": 1}),
        (sketchy.sketchy, {"fd_chunk": None}),
        (sketchy.shampoo, {"statistics_freq": 1}),
        (sketchy.sketchy, {"max_merged_dim": 1}),
        (sketchy.sketchy, {"max_merged_dim": None}),
        (sketchy.shampoo, {"b2": 1e-9}),
        (sketchy.sketchy, {"graft": "sgd", "b2": 1.0}),
        (sketchy.sketchy, {"graft": "none", "b2": 1.0}),
    ],
)
def test_boundary_option_is_accepted(make, kwargs):
    assert make(1e-3, **kwargs) is not None


def test_failed_sketch_update_keeps_the_sketch_and_counts():
    """A frequent-directions step whose decomposition is not finite (here: a sketch poisoned
    with NaN in one block's first factor) keeps that factor as it was and adds exactly one
    to ``failures``; the other factors step on (the counterpart of Shampoo's failed root
    in test_reduction_and_state.py)."""
    tx = sketchy.scale_by_sketchy(
        rank=2, block_size=8, update_freq=1, start_preconditioning_step=0, fd_method="svd"
    )
    params = {"w": jnp.zeros((12, 7))}  # two 6 x 7 blocks
    g = {"w": jnp.asarray(gradient_stream(1, seed=9, shapes={"w": (12, 7)})[0]["w"])}
    update = jax.jit(tx.update)
    _, state = update(g, tx.init(params), params)
    first, second = state.factors["6x7"]
    poisoned = first._replace(eigvals=first.eigvals.at[0].set(jnp.nan))
    state = state._replace(factors={"6x7": (poisoned, second)})
    _, new = update(g, state, params)
    assert int(new.failures) == int(state.failures) + 1
    assert int(new.nonfinite_steps) == 0  # the gradient was finite
    new_first, new_second = new.factors["6x7"]
    for a, b in zip(new_first, poisoned, strict=True):  # block 0 of axis 0 kept as it was
        np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert not np.array_equal(np.asarray(new_first.eigvals[1]), np.asarray(first.eigvals[1]))
    assert not np.array_equal(np.asarray(new_second.eigvals), np.asarray(second.eigvals))


@pytest.mark.parametrize(
    ("graft", "eps"),
    [
        ("rmsprop", 0.05),
        ("rmsprop_uncorrected", 0.05),
        ("rmsprop_normalized", 0.05),
        ("adafactor", 0.05),
        ("adagrad", 1e-8),  # eps far below sqrt(sum g^2): where it sits does not matter
    ],
)
def test_graft_epsilon_where_it_matters(graft, eps):
    """The graft formulas with an epsilon of the size of ``sqrt(nu)`` (test_options.py uses
    1e-8, where ``sqrt(nu) + eps`` and ``sqrt(nu + eps)`` agree to 1e-8); the adagrad graft
    (eps inside the root: test_options.py's xfail) at gradients where the two agree."""
    from test_options import graft_reference

    from sketchy.grafting import graft_transform

    shapes = {"f": (5, 6), "b": (7,)}
    b2 = 1.0 if graft == "adagrad" else 0.9
    tx = graft_transform(graft, b2, eps)
    grads = gradient_stream(4, seed=10, shapes=shapes)
    params = {k: jnp.zeros(s) for k, s in shapes.items()}
    state = tx.init(params)
    if graft == "adagrad":  # sum of g^2 from 0 (AdaGrad's accumulator starts empty)
        acc, expected = {}, []
        for g in grads:
            step = {}
            for name, x in g.items():
                x = np.asarray(x, np.float64)
                acc[name] = acc.get(name, 0.0) + x * x
                step[name] = x / (np.sqrt(acc[name]) + eps)
            expected.append(step)
    else:
        expected = graft_reference(graft, grads, b2, eps)
    for g, ref in zip(grads, expected, strict=True):
        out, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
        for name in shapes:
            np.testing.assert_allclose(np.asarray(out[name]), ref[name], rtol=1e-5)


def test_graft_norm_rescales_any_nonzero_direction():
    from sketchy.grafting import graft_norm

    direction = jnp.asarray([[0.3, 0.0], [0.0, -0.4]])  # norm 0.5 (< 1)
    graft = jnp.asarray([1.2, 1.6])  # norm 2
    np.testing.assert_allclose(np.asarray(graft_norm(direction, graft)), 4 * direction, rtol=1e-6)
    big = 10 * direction  # norm 5
    np.testing.assert_allclose(np.asarray(graft_norm(big, graft)), 0.4 * big, rtol=1e-6)
    zero = graft_norm(jnp.zeros((2, 2)), graft)  # nothing to rescale: zeros, not NaN
    np.testing.assert_array_equal(np.asarray(zero), np.zeros((2, 2)))


@pytest.mark.parametrize("kind", ["shampoo", "sketchy"])
def test_zero_gradients_are_not_failures(kind):
    """All-zero gradients leave nothing to invert (statistics 0): no failure is counted,
    the update is 0, the state finite; the first nonzero gradient then preconditions."""
    make = sketchy.shampoo if kind == "shampoo" else sketchy.sketchy
    tx = make(0.1, block_size=8, update_freq=1, start_preconditioning_step=0)
    params = {"w": jnp.zeros((12, 7)), "t3": jnp.zeros((4, 5, 6))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    update = jax.jit(tx.update)
    state = tx.init(params)
    for _ in range(2):
        u, state = update(zeros, state, params)
        assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(u))
    kron = kronecker_state(state)
    assert int(kron.failures) == 0 and int(kron.nonfinite_steps) == 0
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state))
    g = jax.tree.map(
        jnp.asarray, gradient_stream(1, seed=11, shapes={"w": (12, 7), "t3": (4, 5, 6)})[0]
    )
    u, state = update(g, state, params)
    assert int(kronecker_state(state).failures) == 0
    assert all(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(u))
