"""sketchy/frequent_directions.py at its edges, found by mutation testing (tests/mutation/):
the smallest valid sizes, ``method`` choosing the decomposition that runs, the documented
choice between the two ways of applying the inverse root (a cost, not a value: both give
the same operator, see test_fidelity_fd.py), and an empty sketch acting as the identity."""

import importlib

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from sketchy.frequent_directions import fd_init, fd_inverse_root_apply, fd_update

FD = importlib.import_module("sketchy.frequent_directions")


def test_smallest_sizes_and_bad_sizes():
    one = fd_init(1, 1)
    assert [a.shape for a in one] == [(1, 1), (1,), ()]
    assert fd_init(5, 1).eigvecs.shape == (5, 1)
    assert fd_init(3, 7).eigvecs.shape == (3, 3)  # d <= rank: kept exactly
    new, rho = fd_update(one, jnp.full((1, 2), 2.0), decay=0.5)
    assert float(new.eigvals[0]) == pytest.approx(8.0) and float(rho) == 0.0
    for d, rank in [(0, 1), (1, 0), (-1, 2)]:
        with pytest.raises(ValueError, match="must both be >= 1"):
            fd_init(d, rank)


def test_chunk_of_one_column_is_accepted_and_bad_chunks_raise():
    """``chunk=1``: one FD step per column (d = 4 > k = 2). Its sketch is a valid FD sketch
    (below the decayed covariance, above it minus the escaped mass)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)
    state, rho = fd_update(fd_init(4, 2), x, decay=1.0, chunk=1)
    cov = np.asarray(x, np.float64) @ np.asarray(x, np.float64).T
    sketch = np.asarray(FD.fd_covariance(state), np.float64)
    assert np.linalg.eigvalsh(cov - sketch).min() >= -1e-4
    assert np.linalg.eigvalsh(sketch - cov + float(rho) * np.eye(4)).min() >= -1e-4
    assert float(rho) > 0 and float(state.tail) == pytest.approx(float(rho))
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="chunk must be None or an integer >= 1"):
            fd_update(fd_init(4, 2), x, chunk=bad)
    for bad in ("qr", "SVD"):
        with pytest.raises(ValueError, match="method must be 'svd' or 'eigh'"):
            fd_update(fd_init(4, 2), x, method=bad)
    for bad in (jnp.ones((4,)), jnp.ones((3, 2)), jnp.ones((4, 2, 1))):
        with pytest.raises(ValueError, match=r"x must have shape \[4, n\]"):
            fd_update(fd_init(4, 2), bad)


@pytest.mark.parametrize(
    ("method", "d", "n", "k", "expected"),
    [
        ("svd", 6, 9, 2, "svd"),
        ("svd", 6, 2, 2, "svd"),
        ("eigh", 6, 9, 2, "gram"),  # m = k + n = 11 > k + 1: the Gram's top subspace
        ("eigh", 6, 2, 2, "gram"),
    ],
)
def test_method_chooses_the_decomposition(method, d, n, k, expected, monkeypatch):
    """``method="svd"`` never forms a Gram matrix (the docstring's promise: QR + thin SVD);
    ``"eigh"`` goes through the Gram's top subspace (which itself ends in a small SVD)."""
    calls = []
    for name in ("_top_eigen_svd", "_top_eigen_gram"):
        real = getattr(FD, name)

        def spy(*args, _real=real, _name=name):
            calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(FD, name, spy)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((d, n)), jnp.float32)
    state, _ = fd_update(fd_init(d, k), x, method=method)
    fd_update(state, x, method=method)
    if expected == "svd":
        assert set(calls) == {"_top_eigen_svd"}
    else:
        assert calls[0] == "_top_eigen_gram" and calls.count("_top_eigen_gram") == 2


def dot_shapes(state, y) -> set[tuple[int, ...]]:
    """Output shapes of every matrix product in the traced apply (nested jaxprs included)."""
    shapes = set()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple | list) else [param]:
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        visit(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        visit(sub)

    visit(jax.make_jaxpr(lambda s, y: fd_inverse_root_apply(s, y, 0.25, 1e-3))(state, y).jaxpr)
    return shapes


@pytest.mark.parametrize(
    ("d", "k", "n", "dense"),
    [
        (2, 2, 8, True),  # d (k + n) = 20 < 2 k n = 32: forming d x d is cheaper
        (4, 4, 64, True),
        (4, 3, 6, False),  # 36 = 36: not cheaper, never formed
        (64, 4, 2, False),  # a large factor and few columns: d x d would be 64x the work
        (8, 3, 1, False),
    ],
)
def test_inverse_root_forms_d_x_d_only_where_it_is_cheaper(d, k, n, dense):
    """Documented cost: ``4 d k n`` through ``U^T y``, or, where ``d (k + n) < 2 k n``,
    ``2 d^2 (k + n)`` through the ``d x d`` matrix formed on the fly."""
    rng = np.random.default_rng(2)
    state, _ = fd_update(fd_init(d, k), jnp.asarray(rng.standard_normal((d, d + 1)), jnp.float32))
    y = jnp.asarray(rng.standard_normal((d, n)), jnp.float32)
    shapes = dot_shapes(state, y)
    assert ((d, d) in shapes) == dense, shapes
    if not dense:
        assert (k, n) in shapes, shapes  # U^T y


@pytest.mark.parametrize(("d", "k", "n"), [(5, 2, 3), (3, 3, 40)])  # both apply paths
def test_empty_sketch_is_the_identity(d, k, n):
    """No mass observed yet (all-zero gradients so far): the preconditioner is the identity,
    whatever eps and exponent (not ``0^(-p)``)."""
    y = jnp.asarray(np.random.default_rng(3).standard_normal((d, n)), jnp.float32)
    empty = fd_init(d, k)
    zeroed, _ = fd_update(empty, jnp.zeros((d, 2)), decay=0.9)
    for state in (empty, zeroed):
        for eps, relative in [(1e-3, True), (0.0, False), (0.5, False)]:
            out = fd_inverse_root_apply(state, y, 0.25, eps, relative)
            np.testing.assert_allclose(np.asarray(out), np.asarray(y), rtol=1e-6, atol=1e-7)
