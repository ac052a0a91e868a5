"""Frequent Directions (FD) with exponential decay: the sketch behind Sketchy.

The paper's Algorithm 1 (Liberty's FD) keeps a rank-``k`` sketch ``Gbar = U diag(lam) U^T``
of a stream of PSD updates ``x x^T``. Sec. 4.3 adds an exponential moving average: each
update sketches ``decay * Gbar + x x^T``. The direction that drops out of the sketch, the
``(k+1)``-th eigenvalue ``rho_t`` (the *escaped mass*), is subtracted from the retained
eigenvalues and accumulated in a scalar ``tail``; ``Gbar + tail * I`` upper-bounds the
true (decayed) covariance and ``Gbar`` lower-bounds it.

Here ``rank`` is the number of *retained* directions ``k`` (the paper's ``l`` is ``k + 1``:
its last column is the one that is deflated to zero). A dimension ``d <= rank`` is sketched
exactly (nothing escapes).
"""

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from sketchy.blocking import mode_product

FDMethod = Literal["svd", "eigh"]
HIGHEST = jax.lax.Precision.HIGHEST


class FDState(NamedTuple):
    """A frequent-directions sketch ``Gbar = eigvecs diag(eigvals) eigvecs^T`` plus its tail.

    Attributes:
      eigvecs: ``[d, k]`` orthonormal columns (a column may be zero where it holds no mass).
      eigvals: ``[k]`` deflated eigenvalues of the sketch, descending, ``>= 0``.
      tail: ``[]`` decayed cumulative escaped mass ``rho_{1:t}``.
    """

    eigvecs: jax.Array
    eigvals: jax.Array
    tail: jax.Array


def fd_init(d: int, rank: int, dtype=jnp.float32) -> FDState:
    """An empty sketch of a ``d x d`` covariance keeping ``min(d, rank)`` directions."""
    if d < 1 or rank < 1:
        raise ValueError(f"fd_init: d={d} and rank={rank} must both be >= 1")
    k = min(d, rank)
    return FDState(
        eigvecs=jnp.zeros((d, k), dtype),
        eigvals=jnp.zeros((k,), dtype),
        tail=jnp.zeros((), dtype),
    )


def _top_eigen_svd(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Left singular vectors and squared singular values of ``z`` (``d x m``), descending.

    Also returns the singular values themselves so that deflation can be done as
    ``(s_i - s_k)(s_i + s_k)`` without losing digits to cancellation.
    """
    d, m = z.shape
    if m > d:
        # R^T from a QR of z^T has the same Gram z z^T but only d columns: the SVD then
        # costs O(d^3) instead of O(d^2 m). (The reference implementation does the same.)
        z = jnp.linalg.qr(z.T, mode="r").T
    u, s, _ = jnp.linalg.svd(z, full_matrices=False)
    return u, s * s, s


def _top_eigen_gram(z: jax.Array, r: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The top ``r`` of :func:`_top_eigen_svd`, through ``eigh`` of the smaller Gram matrix.

    Two stages. (1) ``eigh`` of the smaller Gram matrix (``z z^T`` or ``z^T z``) finds the
    top-``r`` invariant subspace. Its eigenvalues are only accurate to about
    ``eps * lambda_max`` (the Gram squares the condition number), which is far too coarse
    for the escaped mass: on an exactly low-rank stream every FD step would report
    ``rho ~ 1e-7 lambda_max`` of pure rounding noise, and the tail accumulates it over
    ``1 / (1 - decay)`` steps. (2) A Rayleigh-Ritz step on ``z`` itself: the thin SVD of
    the ``r``-column projection of ``z`` onto that subspace gives singular values and
    orthonormal vectors computed from ``z``, not from its square. The projection has no
    more rank than ``z``, so when ``z`` has fewer than ``r`` directions the missing ones
    come out at ``eps * s_max`` as in the SVD (squared: ``eps^2 lambda_max``), and a
    well-separated eigenvalue is exact to float32 rounding (its error is second order in
    the subspace error). Cost: the Gram and its ``eigh`` (O(d^2 m + d^3)
    for ``m >= d``, O(d m^2 + m^3) otherwise) plus O((d + m) r^2) for the refinement,
    against the SVD method's QR and SVD of a ``d x d`` (or ``d x m``) matrix.
    """
    d, m = z.shape
    if r > d:
        # rank >= d: the sketch is exact and nothing escapes, so Shampoo's precision (the
        # Gram's eigenvalues, noise ~ eps * lambda_max) is all that is asked for.
        w, u = jnp.linalg.eigh(jnp.matmul(z, z.T, precision=HIGHEST))
        w = jnp.maximum(w[::-1], 0.0)
        return u[:, ::-1], w, jnp.sqrt(w)
    if r >= m:
        return _top_eigen_svd(z)  # z is thin already: nothing to gain from the Gram
    if m >= d:
        _, u = jnp.linalg.eigh(jnp.matmul(z, z.T, precision=HIGHEST))
        basis = u[:, ::-1][:, :r]  # [d, r]: top-r eigenvectors of z z^T
        w, s2, s = _top_eigen_svd(jnp.matmul(basis.T, z, precision=HIGHEST))
        return jnp.matmul(basis, w, precision=HIGHEST), s2, s
    _, v = jnp.linalg.eigh(jnp.matmul(z.T, z, precision=HIGHEST))
    basis = v[:, ::-1][:, :r]  # [m, r]: top-r right singular vectors of z
    return _top_eigen_svd(jnp.matmul(z, basis, precision=HIGHEST))


def _fd_step(eigvecs, eigvals, x, method):
    """Sketch ``U diag(lam) U^T + x x^T`` (no decay): ``(eigvecs, eigvals, rho)``."""
    d, k = eigvecs.shape
    z = jnp.concatenate([eigvecs * jnp.sqrt(eigvals)[None, :], x], axis=1)
    if method == "svd":
        u, lam, s = _top_eigen_svd(z)
    else:
        u, lam, s = _top_eigen_gram(z, k + 1)
    if lam.shape[0] > k:
        rho, s_k = lam[k], s[k]
    else:
        rho, s_k = jnp.zeros((), x.dtype), jnp.zeros((), x.dtype)
    # (s_i - s_k)(s_i + s_k) keeps the small deflated eigenvalues accurate.
    new_eigvals = jnp.maximum((s[:k] - s_k) * (s[:k] + s_k), 0.0)
    return u[:, :k] * (new_eigvals > 0)[None, :], new_eigvals, rho


def fd_update(
    state: FDState,
    x: jax.Array,
    *,
    decay: float | jax.Array = 1.0,
    tail_decay: float | jax.Array | None = None,
    method: FDMethod = "svd",
    chunk: int | None = None,
) -> tuple[FDState, jax.Array]:
    """One FD step: sketch ``decay * Gbar + x x^T`` (paper Alg. 1 with the EMA of Sec. 4.3).

    With ``Z = [sqrt(decay) U diag(sqrt(lam)), x]`` (so ``Z Z^T = decay Gbar + x x^T``; the
    ``d x d`` covariance is never formed by ``method="svd"``), let ``s_1 >= s_2 >= ...`` be
    the singular values of ``Z`` and ``u_i`` its left singular vectors. The new sketch keeps
    ``u_1..u_k`` with eigenvalues ``s_i^2 - s_{k+1}^2``, the escaped mass is
    ``rho = s_{k+1}^2`` (0 if ``Z`` has at most ``k`` singular values) and
    ``tail <- tail_decay * tail + rho``.

    With ``chunk = c`` the columns of ``x`` are fed in chunks ``x_1, x_2, ...`` of ``c``
    (Liberty 2013; Ghashami et al. 2016): the decay is applied once, then each chunk is one
    undecayed FD step, and ``rho`` is the sum of their escaped masses. Each step deflates by
    its own ``s_{k+1}^2``, so the guarantees of FD hold unchanged (the new sketch is below
    ``decay Gbar + x x^T`` and above it minus ``rho I``; Observation 6's bound on the tail),
    but the sketch is not the one-shot one. Cost O(d n (k + c)) instead of
    O(d (k + n) min(d, k + n)): with ``c ~ k`` the refresh is linear in ``d n`` at fixed
    ``k``.

    Args:
      state: the current sketch.
      x: ``[d, n]`` new columns (e.g. a gradient matricized along one axis).
      decay: the EMA factor ``beta2`` applied to the old sketch (1.0 = plain FD).
      tail_decay: factor applied to the old tail; defaults to ``decay`` (paper, Obs. 6).
      method: ``"svd"`` (thin SVD after a QR, never forms ``d x d``) or ``"eigh"`` (eigh of
        the smaller Gram matrix of ``Z`` for the top-``(k+1)`` subspace, then a thin SVD of
        ``Z`` projected onto it: as exact as ``"svd"`` to float32 rounding, the escaped mass
        included, and 2-3x faster for ``d >= 256``; see :func:`_top_eigen_gram`).
      chunk: columns per FD step (``None``: all of ``x`` in one step). Ignored when the
        sketch is exact (``k = d``) or ``x`` has at most ``chunk`` columns.

    Returns:
      ``(new_state, rho)``. If the decomposition yields non-finite values (or ``x`` is not
      finite), the old state is returned unchanged and ``rho`` is NaN, so callers can count
      the failure without poisoning the sketch.
    """
    d, k = state.eigvecs.shape
    if x.ndim != 2 or x.shape[0] != d:
        raise ValueError(f"fd_update: x must have shape [{d}, n], got {x.shape}")
    if method not in ("svd", "eigh"):
        raise ValueError(f"fd_update: method must be 'svd' or 'eigh', got {method!r}")
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"fd_update: chunk must be None or an integer >= 1, got {chunk!r}")
    tail_decay = decay if tail_decay is None else tail_decay
    dtype = state.eigvals.dtype
    x = x.astype(dtype)
    eigvals = jnp.asarray(decay, dtype) * state.eigvals
    n = x.shape[1]
    if chunk is None or chunk >= n or k >= d:
        eigvecs, eigvals, rho = _fd_step(state.eigvecs, eigvals, x, method)
    else:
        num = -(-n // chunk)
        x = jnp.pad(x, ((0, 0), (0, num * chunk - n)))  # zero columns change nothing
        chunks = x.reshape(d, num, chunk).transpose(1, 0, 2)

        def body(carry, xc):
            u, lam, rho = carry
            u, lam, r = _fd_step(u, lam, xc, method)
            return (u, lam, rho + r), None

        init = (state.eigvecs, eigvals, jnp.zeros((), dtype))
        (eigvecs, eigvals, rho), _ = jax.lax.scan(body, init, chunks)
    new = FDState(
        eigvecs=eigvecs.astype(dtype),
        eigvals=eigvals.astype(dtype),
        tail=(tail_decay * state.tail + rho).astype(dtype),
    )
    ok = jnp.all(jnp.isfinite(new.eigvecs)) & jnp.all(jnp.isfinite(new.eigvals))
    ok = ok & jnp.isfinite(new.tail)
    new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
    return new, jnp.where(ok, rho, jnp.nan)


def fd_covariance(state: FDState) -> jax.Array:
    """The dense ``d x d`` sketch ``U diag(lam) U^T`` (for tests and spectra; O(d^2) memory).

    Add ``state.tail * I`` for the upper bound used by Sketchy's preconditioner.
    """
    u = state.eigvecs
    return (u * state.eigvals[None, :]) @ u.T


def fd_inverse_root_apply(
    state: FDState, y: jax.Array, exponent: float, eps: float, relative_eps: bool = True
) -> jax.Array:
    """Apply ``(Gbar + tail I + eps' I)^(-exponent)`` to the columns of ``y``.

    ``y`` is ``[d, n]``, or ``[A, d, B]`` with the factor's axis in the middle (what
    :func:`sketchy.blocking.apply_along_axis` passes: no transposed copy of the block).
    In the span of ``U`` the eigenvalues are ``lam_i + tail`` (the undeflated sketch
    eigenvalue plus the tail of earlier steps); on its complement the eigenvalue is
    ``tail``. ``eps' = eps * (lam_1 + tail)`` if ``relative_eps``. Costs ``4 d k n`` flops
    through ``U^T y``; where forming the ``d x d`` matrix on the fly is cheaper
    (``d (k + n) < 2 k n``: a small ``d``, as when the sketch is exact, ``k = d < n``) it is
    formed (``2 d^2 (k + n)``), used, and dropped: it is never part of the state. An empty
    sketch (no mass at all) acts as the identity.
    """
    if y.ndim == 2:
        return fd_inverse_root_apply(state, y[None], exponent, eps, relative_eps)[0]
    u, lam, tail = state.eigvecs, state.eigvals, state.tail
    top = (lam[0] if lam.shape[0] else 0.0) + tail
    floor = eps * top if relative_eps else eps
    empty = top <= 0
    base = jnp.where(empty, 1.0, tail + floor)
    inv_tail = base ** (-exponent)
    inv = jnp.where(empty, 1.0, lam + tail + floor) ** (-exponent)
    (d, k), n = u.shape, y.shape[0] * y.shape[2]
    if d * (k + n) < 2 * k * n:
        dense = jnp.matmul(u * (inv - inv_tail)[None, :], u.T, precision=HIGHEST)
        return mode_product(dense + inv_tail * jnp.eye(d, dtype=dense.dtype), y)
    proj = mode_product(u, y, transpose=True)  # [A, k, B]
    return inv_tail * y + mode_product(u, (inv - inv_tail)[None, :, None] * proj)
