"""Sketch health: how much of each Frequent-Directions factor has escaped its sketch.

A Sketchy factor is kept as ``Gbar = U diag(lam) U^T`` (``k`` retained directions,
``lam`` already deflated) plus a scalar ``tail`` (the decayed escaped mass ``rho_{1:t}``),
and the preconditioner uses the upper bound ``Gbar + tail I``: eigenvalues ``lam_i + tail``
on the span of ``U`` and ``tail`` on the ``d - k`` other directions (see
:mod:`sketchy.frequent_directions`). From the state alone, with no decomposition:

- **escaped share** ``(d - k) tail / tr(Gbar + tail I)`` with
  ``tr(Gbar + tail I) = sum_i lam_i + d tail``: the part of the bound's mass that sits on
  the directions the sketch does not keep, i.e. what the preconditioner only knows as an
  isotropic floor. ``0`` for an exact sketch (``k = d``) and, by convention, for a factor
  with no mass yet (``0 / 0``). It is in ``[0, 1)``.
- **tail over lambda_max** ``tail / (lam_1 + tail)``: the floor relative to the bound's
  largest eigenvalue (``0 / 0 -> 0`` again).

How they relate to the true (decayed) covariance ``C`` with eigenvalues
``mu_1 >= ... >= mu_d`` and ``m_r = sum_{i > r} mu_i``: FD guarantees
``Gbar <= C <= Gbar + tail I``, hence ``m_k <= (d - k) tail`` (Ky Fan: no ``k``-dim subspace
leaves less than ``m_k`` outside it) and, since each step removes ``k + 1`` times its
escaped mass, ``tail <= min_{r <= k} m_r / (k + 1 - r)``. The escaped share is therefore
bracketed by the dense spectrum (:func:`escaped_share_bounds`); FD's tail is an upper
bound, so the share errs on the side of "too little rank".

Which parameter a block belongs to is found by a probe (:func:`block_owners`), not from the
optimizer's layout; see its docstring for why.
"""

import jax
import jax.numpy as jnp
import numpy as np

from sketchy.frequent_directions import FDState


def _safe_ratio(num, den):
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def escaped_share(state: FDState) -> jax.Array:
    """``(d - k) tail / (sum lam + d tail)`` per sketch (batched over leading dims)."""
    d, k = state.eigvecs.shape[-2:]
    lam = jnp.maximum(jnp.asarray(state.eigvals, jnp.float32), 0.0)
    tail = jnp.maximum(jnp.asarray(state.tail, jnp.float32), 0.0)
    return _safe_ratio((d - k) * tail, jnp.sum(lam, axis=-1) + d * tail)


def tail_over_lambda_max(state: FDState) -> jax.Array:
    """``tail / (lam_1 + tail)``: the floor against the bound's top eigenvalue (batched)."""
    lam = jnp.maximum(jnp.asarray(state.eigvals, jnp.float32), 0.0)
    tail = jnp.maximum(jnp.asarray(state.tail, jnp.float32), 0.0)
    top = (jnp.max(lam, axis=-1) if lam.shape[-1] else 0.0) + tail
    return _safe_ratio(tail, top)


def escaped_share_bounds(cov_eigvals, k: int) -> tuple[float, float]:
    """``(low, high)`` bracketing :func:`escaped_share` of a rank-``k`` FD sketch of ``C``.

    ``cov_eigvals``: the spectrum of the dense (decayed) covariance ``C`` the sketch tracks.
    With ``tau_lo = m_k / (d - k) <= tail <= tau_hi = min_{r <= k} m_r / (k + 1 - r)`` and
    ``tr C - m_k - k tail <= sum lam <= tr C`` (from ``C - tail I <= Gbar <= C`` on the
    sketch's ``k`` directions), the share ``(d - k) t / (sum lam + d t)`` is at least
    ``(d - k) tau_lo / (tr C + d tau_lo)`` and at most
    ``(d - k) tau_hi / (tr C - m_k + (d - k) tau_hi)`` (both monotone in ``t``). Needs
    ``k < d`` and a sketch whose ``k`` columns are all in use.
    """
    mu = np.sort(np.maximum(np.asarray(cov_eigvals, np.float64), 0.0))[::-1]
    d = mu.shape[0]
    if not 0 < k < d:
        raise ValueError(f"escaped_share_bounds: need 0 < k < d, got k={k}, d={d}")
    tail_mass = np.concatenate([np.cumsum(mu[::-1])[::-1], [0.0]])  # tail_mass[r] = m_r
    tau_lo = tail_mass[k] / (d - k)
    tau_hi = min(tail_mass[r] / (k + 1 - r) for r in range(k + 1))
    total, top_k = tail_mass[0], tail_mass[0] - tail_mass[k]
    low = (d - k) * tau_lo / (total + d * tau_lo)
    high = (d - k) * tau_hi / (top_k + (d - k) * tau_hi)
    return float(low), float(high)


def has_sketches(opt_state) -> bool:
    """Whether ``opt_state`` (arrays or ``jax.eval_shape`` structs) holds any ``FDState``."""
    is_fd = lambda x: isinstance(x, FDState)  # noqa: E731
    return any(is_fd(x) for x in jax.tree.leaves(opt_state, is_leaf=is_fd))


def fd_states(opt_state) -> list[tuple[str, FDState]]:
    """Every ``FDState`` in ``opt_state`` with its key path, flattened over leading dims.

    The order is that of :func:`sketchy.spectra.factor_spectra` restricted to sketches.
    """
    is_fd = lambda x: isinstance(x, FDState)  # noqa: E731
    out = []
    for path, node in jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=is_fd)[0]:
        if isinstance(node, FDState):
            d, k = node.eigvecs.shape[-2:]
            flat = FDState(
                jax.ShapeDtypeStruct((int(np.prod(node.tail.shape)), d, k), node.eigvecs.dtype),
                jnp.reshape(node.eigvals, (-1, k)),
                jnp.reshape(node.tail, (-1,)),
            )
            out.append((jax.tree_util.keystr(path), flat))
    return out


def block_owners(tx, params) -> list[np.ndarray]:
    """The parameter (index in ``jax.tree.leaves(params)`` order) of every sketched block.

    One ``int`` array per entry of :func:`fd_states`, ``-1`` for a block of no parameter
    (padding). Found by a probe: from a fresh state, updates whose gradient is random on the
    parameters whose ``index + 1`` has bit ``b`` set and zero elsewhere (parameters zero, so
    no weight decay leaks in); a block whose statistics become non-zero in probe ``b`` gets
    bit ``b`` of its code. ``ceil(log2(n + 1))`` runs of one compiled update.

    Why a probe and not the layout (``plan_layout`` / ``Layout.groups``): it relies only on
    "a block's statistics are non-zero iff its parameter's gradient is" (the contract of
    :func:`sketchy.spectra.owned_blocks`), so it is right whatever the optimizer's block
    order, merging, per-parameter padding or extra stacked padding blocks, and needs only
    ``tx`` and the parameters' shapes (the trainer does not know the optimizer's layout
    settings, and a chain may hold several). Coding leaves by gradient *scale* in a single
    run would not be robust either: a block's eigenvalue also scales with how many of its
    entries are real (edge blocks are zero-padded) and with the first step's scaling.
    Needs an optimizer that updates its statistics on its first step (Sketchy does).
    """
    leaves, treedef = jax.tree.flatten(params)
    zero_leaves = [jnp.zeros(x.shape, x.dtype) for x in leaves]
    zeros = treedef.unflatten(zero_leaves)
    init, update = jax.jit(tx.init), jax.jit(tx.update)
    codes = None
    for bit in range(max(1, len(leaves).bit_length())):
        keys = jax.random.split(jax.random.key(bit), len(leaves))
        grads = [
            jax.random.normal(key, z.shape, z.dtype) if ((i + 1) >> bit) & 1 else z
            for i, (key, z) in enumerate(zip(keys, zero_leaves, strict=True))
        ]
        _, state = update(treedef.unflatten(grads), init(zeros), zeros)
        live = [np.asarray(jnp.max(s.eigvals, axis=-1) > 0) for _, s in fd_states(state)]
        if codes is None:
            codes = [np.zeros(m.shape, np.int64) for m in live]
        codes = [c | (m.astype(np.int64) << bit) for c, m in zip(codes, live, strict=True)]
    return [c - 1 for c in codes or []]


def health_summary(opt_state, owners: list[np.ndarray], names: list[str]) -> dict:
    """Sketch health over the blocks of every parameter (``owners`` from :func:`block_owners`).

    Only truly sketched blocks count (``d > k``; an exact sketch escapes nothing). Returns
    ``{}`` without sketches, else ``escaped_share_mean``, ``escaped_share_max``,
    ``tail_over_lambda_max_max`` (floats) and, when a block qualifies, the worst block's
    ``escaped_share_max_param`` (index into ``names``), ``escaped_share_max_path`` (its
    name), ``escaped_share_max_dim`` (``d``) and ``escaped_share_max_rank`` (``k``).
    """
    states = fd_states(opt_state)
    if not states:
        return {}
    shares, ratios, where = [], [], []
    for (_, s), owner in zip(states, owners, strict=True):
        d, k = s.eigvecs.shape[-2:]
        keep = np.asarray(owner) >= 0
        if d <= k or not keep.any():
            continue
        shares.append(np.asarray(escaped_share(s))[keep])
        ratios.append(np.asarray(tail_over_lambda_max(s))[keep])
        where.extend((int(o), d, k) for o in np.asarray(owner)[keep])
    if not shares:
        return {
            "escaped_share_mean": 0.0,
            "escaped_share_max": 0.0,
            "tail_over_lambda_max_max": 0.0,
        }
    share, ratio = np.concatenate(shares), np.concatenate(ratios)
    worst = int(np.argmax(share))
    owner, d, k = where[worst]
    return {
        "escaped_share_mean": float(share.mean()),
        "escaped_share_max": float(share[worst]),
        "tail_over_lambda_max_max": float(ratio.max()),
        "escaped_share_max_param": float(owner),
        "escaped_share_max_path": names[owner],
        "escaped_share_max_dim": float(d),
        "escaped_share_max_rank": float(k),
    }


def suggest_rank(rank: int, d: int) -> int:
    """The next power of two ``>= 2 rank``, capped at ``d`` (where the sketch is exact)."""
    return min(d, 1 << max(0, 2 * rank - 1).bit_length())
