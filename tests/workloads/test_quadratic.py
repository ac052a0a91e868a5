"""workloads.quadratic: the float64 loss, its rounded gradient, the fixed starting point."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workloads.quadratic import Quadratic
from workloads.quadratic.workload import hessian_factors


def test_factors_are_symmetric_with_the_requested_condition():
    h0, h1, lam = hessian_factors(12, log_cond=3.0)
    assert lam.max() == pytest.approx(10.0) and lam.max() / lam.min() == pytest.approx(1e3)
    for h in (h0, h1):
        np.testing.assert_allclose(h, h.T, atol=1e-12)
        np.testing.assert_allclose(np.linalg.eigvalsh(h), np.sort(lam), rtol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_is_float64_and_the_gradient_is_its_exact_value_rounded(dtype):
    with jax.enable_x64(True):
        q = Quadratic(size=10, log_cond=2.0, dtype=dtype)
        params, state = q.init(jax.random.key(0))
        w = params["w"]
        assert w.dtype == jnp.dtype(dtype)
        h0, h1, _ = hessian_factors(10, 2.0)
        w64 = np.asarray(w, np.float64)
        loss, (count, _) = q.loss(params, state, {}, rng=None, train=True)
        assert loss.dtype == jnp.float64 and float(count) == 1.0
        assert float(loss) == pytest.approx(np.trace(w64.T @ h0 @ w64 @ h1), rel=1e-12)
        grad = jax.grad(lambda p: q.loss(p, state, {}, rng=None, train=True)[0])(params)["w"]
        want = (2.0 * (jnp.asarray(h0) @ jnp.asarray(w64) @ jnp.asarray(h1))).astype(dtype)
        assert grad.dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(grad), np.asarray(want))
        metrics = q.evaluate(params, state, "validation", global_batch_size=1)
        assert metrics == {"validation/loss": pytest.approx(float(loss), rel=1e-12)}


def test_start_does_not_depend_on_the_trainer_seed():
    with jax.enable_x64(True):
        q = Quadratic(size=6)
        a, _ = q.init(jax.random.key(0))
        b, _ = q.init(jax.random.key(1))
    np.testing.assert_array_equal(a["w"], b["w"])


def test_refuses_to_run_without_64_bit_arithmetic():
    with jax.enable_x64(False), pytest.raises(ValueError, match="trainer.jax_enable_x64=true"):
        Quadratic(size=4)
