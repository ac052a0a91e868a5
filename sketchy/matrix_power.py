"""The one symmetric matrix power of the library (Shampoo's inverse roots, KrADagrad's roots).

``eigh`` rather than a coupled Newton iteration (``distributed_shampoo``'s default): on CPU
and GPU a float32 ``eigh`` of a ``d <= 1024`` factor is fast enough at a refresh every
``update_freq`` steps, it is exact to rounding for any exponent, and it returns the
eigenvalues the relative epsilon and the failure check need.
"""

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


def psd_power(
    x: jax.Array, exponent: float, eps: float = 0.0, relative_eps: bool = False
) -> tuple[jax.Array, jax.Array]:
    """``(X_+ + eps' I)^exponent`` of a symmetric ``X``, and ``lambda_max(X)``.

    ``X = V diag(w) V^T`` by ``eigh``; ``X_+`` clips the negative eigenvalues (rounding of a
    PSD matrix) to 0; ``eps' = eps * lambda_max`` if ``relative_eps`` else ``eps``. A
    negative ``exponent`` needs ``eps' > 0`` wherever ``X`` is singular.
    """
    w, v = jnp.linalg.eigh(x)
    top = jnp.max(w)
    floor = eps * top if relative_eps else eps
    scale = (jnp.maximum(w, 0.0) + floor) ** exponent
    return jnp.matmul(v * scale[None, :], v.T, precision=HIGHEST), top
