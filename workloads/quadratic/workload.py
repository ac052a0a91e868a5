"""The quadratic workload: ``f(W) = tr(W^T H0 W H1)``, ill-conditioned, no data.

Implements :class:`workloads.base.Workload` for the KrADagrad paper's quadratic
(arXiv 2305.19416): ``W`` of ``size x size`` and ``H_i = Q_i diag(lam) Q_i^T`` with ``Q_i``
from the QR of a Gaussian matrix and ``lam = 10^(-(linspace(0, sqrt(c)))^2)`` rescaled to a
maximum of 10 (``c = log_cond``: condition ``10^c`` per factor, ``10^(2c)`` for the
Kronecker Hessian ``2 H1 (x) H0``). Seeds and sizes follow the KrADagrad authors' public
notebook (its RNG was torch's, so the matrices are not theirs).

As in that notebook, the loss and its gradient are computed in float64 and the gradient is
rounded to the parameters' ``dtype``, so runs in different dtypes differ only in the
optimizer's arithmetic; float64 needs ``trainer.jax_enable_x64`` (``workload=quadratic`` sets it).
Batches are empty: every step sees the same deterministic loss.
"""

import functools
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

PROBLEM_SEED, INIT_SEED = 4750, 95054  # the reference notebook's seeds


def hessian_factors(size: int, log_cond: float, seed: int = PROBLEM_SEED):
    """``(H0, H1, lam)`` in float64 (NumPy)."""
    rng = np.random.default_rng(seed)
    lam = 10.0 ** (-(np.linspace(0.0, np.sqrt(log_cond), size) ** 2))
    lam = lam * (10.0 / lam.max())
    hs = []
    for _ in range(2):
        q, _ = np.linalg.qr(rng.standard_normal((size, size)))
        hs.append((q * lam) @ q.T)
    return hs[0], hs[1], lam


def float64_loss(h0: np.ndarray, h1: np.ndarray) -> Callable[[jax.Array], jax.Array]:
    """``W -> tr(W^T H0 W H1)`` in float64, whose gradient ``2 H0 W H1`` (``H_i`` symmetric)
    is formed once from the forward product (half autodiff's float64 matmuls) and rounded to
    ``W``'s dtype."""

    def product(w):
        w64 = w.astype(jnp.float64)
        return w64, jnp.asarray(h0) @ w64 @ jnp.asarray(h1)

    @jax.custom_vjp
    def loss(w):
        w64, hw = product(w)
        return jnp.sum(w64 * hw)

    def forward(w):
        w64, hw = product(w)
        return jnp.sum(w64 * hw), (hw, jnp.zeros((), w.dtype))

    def backward(residuals, cotangent):
        hw, like = residuals
        return ((2.0 * hw * cotangent).astype(like.dtype),)

    loss.defvjp(forward, backward)
    return loss


class Quadratic:
    """The quadratic with its size, conditioning, dtype and seeds as constructor fields.

    Args:
        size: ``W`` is ``size x size`` (the reference: 1536).
        log_cond: ``c``: each factor's condition number is ``10^c``.
        dtype: The parameters' dtype (``float32`` or ``float64``); the loss is float64.
        problem_seed: Seed of ``Q_0, Q_1``.
        init_seed: Seed of the Gaussian ``W_0`` (the trainer's seed is not used: every run
            starts from the reference's point).
    """

    name = "quadratic"
    targets: dict[str, float] = {}

    def __init__(
        self,
        size: int = 1536,
        log_cond: float = 4.0,
        dtype: str = "float32",
        problem_seed: int = PROBLEM_SEED,
        init_seed: int = INIT_SEED,
    ) -> None:
        if jax.dtypes.canonicalize_dtype(jnp.float64) != jnp.float64:  # x64 off
            raise ValueError(
                "the quadratic computes its loss in float64: set trainer.jax_enable_x64=true "
                "(workload=quadratic does)"
            )
        self.dtype = jnp.dtype(dtype)
        self.size, self.log_cond, self.problem_seed = size, log_cond, problem_seed
        self._w0 = np.random.default_rng(init_seed).standard_normal((size, size))

    @functools.cached_property
    def _loss(self) -> Callable[[jax.Array], jax.Array]:
        # Built on first use: two QRs of size x size take seconds at the paper's size.
        h0, h1, _ = hessian_factors(self.size, self.log_cond, self.problem_seed)
        return float64_loss(h0, h1)

    def init(self, rng: jax.Array):
        del rng  # the reference's starting point (init_seed)
        return {"w": jnp.asarray(self._w0, self.dtype)}, {}

    def apply(self, params, model_state, batch, *, rng, train):
        return self._loss(params["w"]), model_state

    def loss(self, params, model_state, batch, *, rng, train):
        return self._loss(params["w"]), (jnp.ones((), jnp.float64), model_state)

    def batches(self, split, global_batch_size, *, seed, num_shards=1, start_step=0) -> Iterator:
        """Empty batches: forever for ``train``, one for an evaluation split."""
        if split == "train":
            while True:
                yield {}
        yield {}

    def evaluate(self, params, model_state, split, *, global_batch_size, num_shards=1,
                 put=lambda b: b) -> dict[str, float]:  # fmt: skip
        return {f"{split}/loss": float(jax.jit(self._loss)(params["w"]))}

    def fake_batch(self, global_batch_size: int, num_shards: int = 1) -> dict:
        return {}
