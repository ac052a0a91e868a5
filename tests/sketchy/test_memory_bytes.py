"""``sketchy.memory.state_bytes`` against byte counts worked out by hand, for every optimizer
and every graft.

The parameters (float32, 4 bytes per number), with ``block_size = 256``,
``max_precond_dim = 4096``:

- ``a`` (300, 200): 300 > 256 is split into 2 equal blocks of 150, so 2 blocks 150 x 200;
- ``conv`` (3, 3, 16, 32): 3*3*16 = 144 <= 256 merge, 144*32 > 256: one block 144 x 32;
- ``bias`` (200,): one dimension, graft only;
- ``wide`` (5000, 8): 5000 > max_precond_dim, graft only.

``N`` = 60000 + 4608 + 200 + 40000 = 104808 parameters.

Per block and axis of size ``d``: Shampoo (and KrADagrad, whose inverse statistic ``X``
is filed as statistics) keeps a ``d x d`` statistic and a ``d x d`` root; Sketchy at rank
``k`` keeps ``U`` (``d x min(k, d)``), ``lam`` (``min(k, d)``) and the tail (1), no root.
"""

import jax
import jax.numpy as jnp
import optax
import pytest

import sketchy
from sketchy import memory
from sketchy.grafting import GRAFTS
from sketchy.kradagrad import kradagrad, kradagrad_star

SHAPES = {"a": (300, 200), "conv": (3, 3, 16, 32), "bias": (200,), "wide": (5000, 8)}
N = 300 * 200 + 3 * 3 * 16 * 32 + 200 + 5000 * 8
F32, I32, BOOL = 4, 4, 1

# Square factors (Shampoo, KrADagrad): a's two blocks (150, 200), conv's block (144, 32).
SQUARE = 2 * (150 * 150 + 200 * 200) + (144 * 144 + 32 * 32)
# Sketches at rank 32: d*k + k + 1 per axis, k = min(32, d).
RANK = 32
SKETCH = 2 * ((150 * 32 + 32 + 1) + (200 * 32 + 32 + 1)) + (
    (144 * 32 + 32 + 1) + (32 * 32 + 32 + 1)
)

# Graft state. optax's RMSProp keeps nu (N numbers), plus an int32 step count when
# bias-corrected; AdaGrad its sum of squares; Adafactor, per tensor, a row and a column
# EMA when its two largest dims are >= 128 ("a": 300 + 200, and a 1-element unused full
# accumulator) and else the full accumulator plus two 1-element unused factors; plus an
# int32 count.
ADAFACTOR = (300 + 200 + 1) + (1 + 1 + 4608) + (1 + 1 + 200) + (1 + 1 + 40000)
GRAFT_BYTES = {
    "rmsprop": F32 * N + I32,
    "rmsprop_uncorrected": F32 * N,
    "rmsprop_normalized": F32 * N,
    "adagrad": F32 * N,
    "adafactor": F32 * ADAFACTOR + I32,
    "sgd": 0,
    "none": 0,
}
# Counters: the Kronecker state's count, failures, nonfinite_steps (int32 each), and
# optax.apply_if_finite's notfinite_count (int32), last_finite (bool), total_notfinite.
KRONECKER_OTHER = 3 * I32 + (I32 + BOOL + I32)


def test_every_graft_has_a_hand_count():
    assert set(GRAFT_BYTES) == set(GRAFTS)


def optimizer(name, graft):
    common = dict(block_size=256, max_precond_dim=4096, graft=graft)
    if name == "sketchy":
        return sketchy.sketchy(1e-3, rank=RANK, **common)
    if name == "shampoo":
        return sketchy.shampoo(1e-3, **common)
    # KrADagrad defaults to b2 = 1 (sums), which only the AdaGrad graft accepts.
    if name == "kradagrad":
        return kradagrad(1e-3, b2=0.99, **common)
    return kradagrad_star(1e-3, b2=0.99, **common)


EXPECTED_FACTORS = {
    "sketchy": {"statistics": F32 * SKETCH, "preconditioners": 0},
    "shampoo": {"statistics": F32 * SQUARE, "preconditioners": F32 * SQUARE},
    "kradagrad": {"statistics": F32 * SQUARE, "preconditioners": F32 * SQUARE},
    "kradagrad_star": {"statistics": F32 * SQUARE, "preconditioners": F32 * SQUARE},
}


def abstract_state(tx):
    params = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in SHAPES.items()}
    return jax.eval_shape(tx.init, params), params


@pytest.mark.parametrize("graft", GRAFT_BYTES)
@pytest.mark.parametrize("name", EXPECTED_FACTORS)
def test_kronecker_optimizers(name, graft):
    state, params = abstract_state(optimizer(name, graft))
    expected = {
        **EXPECTED_FACTORS[name],
        "grafting": GRAFT_BYTES[graft],
        "momentum": F32 * N,  # m <- b1 m + d
        "other": KRONECKER_OTHER,
    }
    expected["total"] = sum(expected.values())
    assert memory.state_bytes(state) == expected
    per_param = memory.bytes_per_param(state, params)
    assert per_param["total"] == pytest.approx(expected["total"] / (4 * N), rel=1e-12)


@pytest.mark.parametrize(
    ("tx", "expected"),
    [
        # Adam: mu (momentum), nu (statistics), an int32 count.
        (optax.adamw(1e-3), {"statistics": F32 * N, "momentum": F32 * N, "other": I32}),
        # SGD with momentum: the trace only.
        (optax.sgd(1e-2, momentum=0.9), {"momentum": F32 * N}),
        (optax.sgd(1e-2), {}),
    ],
    ids=["adamw", "sgd_momentum", "sgd"],
)
def test_first_order_optimizers(tx, expected):
    state, _ = abstract_state(tx)
    full = dict.fromkeys(memory.CATEGORIES, 0) | expected
    full["total"] = sum(expected.values())
    assert memory.state_bytes(state) == full


def test_concrete_state_counts_like_the_abstract_one():
    tx = sketchy.sketchy(1e-3, rank=4, block_size=8, graft="adafactor")
    params = {"w": jnp.zeros((12, 7)), "b": jnp.zeros((7,))}
    concrete = memory.state_bytes(tx.init(params))
    # w: 2 blocks of 6 x 7, k = 4: 2 * ((6*4 + 5) + (7*4 + 5)); adafactor unfactored
    # (dims < 128): (1 + 1 + 84) + (1 + 1 + 7) and a count.
    assert concrete["statistics"] == F32 * 2 * ((6 * 4 + 5) + (7 * 4 + 5))
    assert concrete["grafting"] == F32 * ((1 + 1 + 84) + (1 + 1 + 7)) + I32
    assert concrete["momentum"] == F32 * (84 + 7)


def test_parameter_names_do_not_decide_categories():
    """Dict keys are the parameters' names: a parameter called ``v`` or ``mu`` keeps its
    momentum counted as momentum and its Adam second moment as statistics."""
    params = {"v": jnp.zeros((8, 4)), "mu": jnp.zeros((16,))}
    state = jax.eval_shape(optax.adam(1e-3).init, params)
    words = {k: b // 4 for k, b in memory.state_bytes(state).items()}
    assert words["momentum"] == 48 and words["statistics"] == 48, words


def test_reference_implementations_fields():
    """The authors' state fields that the benchmarks count (``distributed_shampoo``'s and
    tearfree's): a Sketchy factor's cached inverse eigenvalues and tail and Shampoo's roots
    are preconditioners, the graft accumulator ``acc`` is grafting, the sketch and Shampoo's
    ``stats`` statistics."""
    from typing import NamedTuple

    class Axis(NamedTuple):  # tearfree's per-axis sketch state, field for field
        eigvecs: jax.Array
        eigvals: jax.Array
        inv_eigvals: jax.Array
        tail: jax.Array
        inv_tail: jax.Array

    class Graft(NamedTuple):
        acc: dict

    class Shampoo(NamedTuple):
        diagonal_statistics: jax.Array
        diagonal_momentum: jax.Array

    class Blocks(NamedTuple):  # tearfree Shampoo's per-parameter blocks
        stats: list
        roots: list

    k, d = 3, 10
    state = (
        Axis(jnp.zeros((d, k)), jnp.zeros(k), jnp.zeros(k), jnp.zeros(()), jnp.zeros(())),
        Graft({"w": jnp.zeros((d, 4))}),
        Shampoo(jnp.zeros(7), jnp.zeros(5)),
        Blocks([jnp.zeros((2, 6, 6))], [jnp.zeros((2, 6, 6))]),
    )
    words = {c: b // 4 for c, b in memory.state_bytes(state).items()}
    assert words["statistics"] == d * k + k + 1 + 72, words
    assert words["preconditioners"] == k + 1 + 72, words
    assert words["grafting"] == d * 4 + 7 and words["momentum"] == 5, words
    assert words["other"] == 0, words
