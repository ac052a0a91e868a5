"""Spectral diagnostics of Kronecker factors (paper Sec. 5.2, Fig. 3), for logging.

For a PSD factor ``C`` with eigenvalues ``lambda_1 >= ... >= lambda_d``:
- top-``k`` spectral mass share ``sum_{i<=k} lambda_i / sum_i lambda_i``;
- intrinsic dimension ``tr C / lambda_max``;
- for Sketchy's sketches, the escaped mass ``tau`` (the tail). A sketch's spectrum is taken
  as that of its upper bound ``Gbar + tau I``: ``lam_i + tau`` on the sketch's span and
  ``tau`` on the ``d - k`` other directions.
"""

import jax
import jax.numpy as jnp
import numpy as np

from sketchy.frequent_directions import FDState
from sketchy.shampoo import ShampooFactor


def top_k_share(eigvals: jax.Array, k: int) -> jax.Array:
    """Share of the spectral mass in the ``k`` largest eigenvalues (last axis)."""
    lam = jnp.sort(jnp.maximum(eigvals, 0.0), axis=-1)[..., ::-1]
    total = jnp.sum(lam, axis=-1)
    return jnp.sum(lam[..., :k], axis=-1) / jnp.where(total > 0, total, 1.0)


def intrinsic_dimension(eigvals: jax.Array) -> jax.Array:
    """``tr C / lambda_max(C)`` (last axis); 0 for an all-zero spectrum."""
    lam = jnp.maximum(eigvals, 0.0)
    top = jnp.max(lam, axis=-1)
    return jnp.sum(lam, axis=-1) / jnp.where(top > 0, top, 1.0)


def sketch_spectrum(state: FDState) -> jax.Array:
    """Eigenvalues of ``Gbar + tau I`` (batched over leading dims), length ``d``."""
    d, k = state.eigvecs.shape[-2:]
    tail = state.tail[..., None]
    rest = jnp.broadcast_to(tail, (*state.tail.shape, d - k))
    return jnp.concatenate([state.eigvals + tail, rest], axis=-1)


def factor_spectra(opt_state) -> list[dict]:
    """Every Shampoo factor / Sketchy sketch in ``opt_state``, flattened over blocks.

    Returns a list of ``{"path", "dim", "eigvals" [blocks, d], "escaped" [blocks] | None}``.
    Shampoo factors need an ``eigh`` each: call this every N steps, not every step.
    """
    is_factor = lambda x: isinstance(x, ShampooFactor | FDState)  # noqa: E731
    out = []
    for path, node in jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=is_factor)[0]:
        if isinstance(node, ShampooFactor):
            stats = node.statistics.reshape(-1, *node.statistics.shape[-2:])
            lam = jnp.linalg.eigvalsh(stats)
            out.append(
                {
                    "path": jax.tree_util.keystr(path),
                    "dim": stats.shape[-1],
                    "eigvals": lam,
                    "escaped": None,
                }
            )
        elif isinstance(node, FDState):
            d, k = node.eigvecs.shape[-2:]
            flat = FDState(
                node.eigvecs.reshape(-1, d, k), node.eigvals.reshape(-1, k), node.tail.reshape(-1)
            )
            out.append(
                {
                    "path": jax.tree_util.keystr(path),
                    "dim": d,
                    "eigvals": sketch_spectrum(flat),
                    "escaped": flat.tail,
                }
            )
    return out


def spectra_summary(opt_state, k: int = 256) -> dict[str, float]:
    """Scalar summary for logging: mean / quartiles over all factors with ``dim > k``.

    Keys: ``top{k}_share_mean``, ``intrinsic_dim_mean``, ``intrinsic_dim_q25/q75``,
    ``dim_mean`` (the mean dimension of those factors, to read the intrinsic dimension
    against), ``escaped_mass_mean`` (sketches only), ``num_factors``. Factors no larger than
    ``k`` are exact and excluded from the share (it would be 1 by definition); all-zero
    factors (not yet updated) from the rest.
    """
    shares, dims, sizes, escaped = [], [], [], []
    for f in factor_spectra(opt_state):
        lam = f["eigvals"]
        idim = np.asarray(intrinsic_dimension(lam))
        live = np.asarray(jnp.max(lam, axis=-1)) > 0
        dims.extend(idim[live].tolist())
        sizes.extend([f["dim"]] * int(live.sum()))
        if f["dim"] > k:
            shares.extend(np.asarray(top_k_share(lam, k)).tolist())
        if f["escaped"] is not None:
            escaped.extend(np.asarray(f["escaped"]).tolist())
    out = {"num_factors": float(len(dims))}
    if shares:
        out[f"top{k}_share_mean"] = float(np.mean(shares))
    if dims:
        out["intrinsic_dim_mean"] = float(np.mean(dims))
        out["intrinsic_dim_q25"] = float(np.percentile(dims, 25))
        out["intrinsic_dim_q75"] = float(np.percentile(dims, 75))
        out["dim_mean"] = float(np.mean(sizes))
    if escaped:
        out["escaped_mass_mean"] = float(np.mean(escaped))
    return out


def owned_blocks(tx, params, path: str) -> list[np.ndarray]:
    """Which factor blocks belong to the parameter at ``path`` (a ``jax.tree_util.keystr``).

    A probe that needs no knowledge of how the optimizer lays out its blocks: one update
    from a fresh state, with a random gradient on that parameter, zero gradients (and zero
    parameters, so no weight decay leaks in) elsewhere; the blocks whose statistics become
    non-zero are its own. Needs an optimizer that updates its statistics on its first step
    (Shampoo, Sketchy: count 0 is a statistics step). Returns one boolean mask over blocks
    per entry of :func:`factor_spectra` (same order). Costs one compile of ``tx.update``.
    """
    found = []

    def probe_grad(key_path, x):
        if jax.tree_util.keystr(key_path) != path:
            return jnp.zeros_like(x)
        found.append(path)
        return jax.random.normal(jax.random.key(0), x.shape, x.dtype)

    grads = jax.tree_util.tree_map_with_path(probe_grad, params)
    if not found:
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        names = [jax.tree_util.keystr(p) for p, _ in leaves]
        raise ValueError(f"no parameter at {path!r}; parameters: {', '.join(names[:8])}, ...")
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = jax.jit(tx.init)(zeros)
    _, state = jax.jit(tx.update)(grads, state, zeros)
    return [np.asarray(jnp.max(f["eigvals"], axis=-1) > 0) for f in factor_spectra(state)]


def top_quarter_share(opt_state, owned: list[np.ndarray]) -> float | None:
    """Mean share of the top ``ceil(d / 4)`` eigenvalues over the blocks marked in ``owned``.

    The paper's Fig. 3 (left) statistic, the top 256 of 1024, for factors of any size
    ``d >= 4`` (smaller ones are left out: their top quarter is one eigenvalue of at most
    three). ``owned`` comes from :func:`owned_blocks`; ``None`` if nothing qualifies.
    """
    shares = []
    for f, mask in zip(factor_spectra(opt_state), owned, strict=True):
        if f["dim"] >= 4 and mask.any():
            share = top_k_share(f["eigvals"], -(-f["dim"] // 4))
            shares.extend(np.asarray(share)[mask].tolist())
    return float(np.mean(shares)) if shares else None
