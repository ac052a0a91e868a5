"""Optimizer-state memory: measured from a state pytree, and the paper's formulas.

:func:`state_bytes` classifies every array of an optimizer state (concrete, or abstract from
``jax.eval_shape(tx.init, params)``) by the name of the state field that holds it:

- ``statistics``: second-moment statistics: Shampoo's ``L``/``R``, Sketchy's sketches
  (``eigvecs``, ``eigvals``, ``tail``), Adam's ``nu``;
- ``preconditioners``: cached inverse roots;
- ``grafting``: everything under a ``graft`` field (the graft's own second moments);
- ``momentum``: first moments (optax ``trace``, Adam's ``mu``);
- ``other``: counters and flags.
"""

import math

import jax

from sketchy.blocking import plan_blocks

CATEGORIES = ("statistics", "preconditioners", "grafting", "momentum", "other")

# Field names of optax's and this library's state NamedTuples.
_FIELD_CATEGORY = {
    "statistics": "statistics",
    "eigvecs": "statistics",
    "eigvals": "statistics",
    "tail": "statistics",
    "nu": "statistics",
    "sum_of_squares": "statistics",
    "v_row": "statistics",
    "v_col": "statistics",
    "v": "statistics",
    "preconditioner": "preconditioners",
    "preconditioners": "preconditioners",
    "inverse": "preconditioners",
    "trace": "momentum",
    "mu": "momentum",
    "momentum": "momentum",
    # precondition-opt's distributed_shampoo (benchmarked against): graft accumulator and
    # the graft's separate momentum buffer.
    "diagonal_statistics": "grafting",
    "diagonal_momentum": "momentum",
    # Its tearfree optimizer: Shampoo's statistics and roots, Sketchy's cached inverse
    # eigenvalues and tail beside the sketch, the graft's accumulator (RMSProp's ``acc``).
    "stats": "statistics",
    "roots": "preconditioners",
    "inv_eigvals": "preconditioners",
    "inv_tail": "preconditioners",
    "acc": "grafting",
}


def _field_names(path) -> list[str]:
    """The state-field names on ``path``: attributes of state NamedTuples only. Dict keys
    are the parameters' own names (a parameter called ``v`` or ``mu`` must not decide what
    its momentum is) or factor-group keys."""
    return [key.name for key in path if isinstance(key, jax.tree_util.GetAttrKey)]


def _category(path) -> str:
    names = _field_names(path)
    if "graft" in names:
        return "grafting"
    for name in reversed(names):
        if name in _FIELD_CATEGORY:
            return _FIELD_CATEGORY[name]
    return "other"


def state_bytes(opt_state) -> dict[str, int]:
    """Bytes of ``opt_state`` by category (see module doc), plus ``"total"``."""
    out = dict.fromkeys(CATEGORIES, 0)
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        if not hasattr(leaf, "dtype"):
            continue
        out[_category(path)] += math.prod(leaf.shape) * leaf.dtype.itemsize
    out["total"] = sum(out[c] for c in CATEGORIES)
    return out


def param_count(params) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def bytes_per_param(opt_state, params) -> dict[str, float]:
    """:func:`state_bytes` divided by ``4 * #params`` (float32 copies of the parameters)."""
    n = 4 * param_count(params)
    return {k: v / n for k, v in state_bytes(opt_state).items()}


# ---- The paper's per-matrix formulas (float32 elements, Fig. 1 / Sec. 3.3) ----


def adam_floats(m: int, n: int) -> dict[str, int]:
    """Adam: first and second moment, ``mn`` each."""
    return {"statistics": m * n, "momentum": m * n}


def shampoo_floats(m: int, n: int, block_size: int | None = None) -> dict[str, int]:
    """Shampoo: per block ``b_m x b_n``: statistics ``b_m^2 + b_n^2`` and as many roots."""
    stats = sum(d * d * nb for d, nb in _blocks(m, n, block_size))
    return {"statistics": stats, "preconditioners": stats}


def sketchy_floats(m: int, n: int, rank: int, block_size: int | None = None) -> dict[str, int]:
    """S-Shampoo: per block and axis ``d``: ``d k + k + 1`` with ``k = min(rank, d)``."""
    stats = 0
    for d, nb in _blocks(m, n, block_size):
        k = min(rank, d)
        stats += nb * (d * k + k + 1)
    return {"statistics": stats, "preconditioners": 0}


def _blocks(m: int, n: int, block_size: int | None):
    """``(axis size, number of factors of that size)`` for a blocked ``m x n`` matrix."""
    if block_size is None:
        return [(m, 1), (n, 1)]
    plan = plan_blocks((m, n), block_size, max(m, n))
    if plan is None:
        return []
    nblocks = plan.total_blocks
    return [(d, nblocks) for d in plan.block_shape]
