"""What the optimizer benchmarks share: their inputs, the timed compile, the steady/refresh loop."""

import time

import jax
import jax.numpy as jnp
import numpy as np


def bench_inputs(shapes: dict) -> tuple[dict, dict]:
    """``(params, grads)``: zero parameters and fixed Gaussian gradients of these shapes."""
    params = {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()}
    keys = jax.random.split(jax.random.PRNGKey(0), len(shapes))
    grads = {k: jax.random.normal(key, s) for key, (k, s) in zip(keys, shapes.items(), strict=True)}
    return params, grads


def compile_update(tx, grads, state, params) -> tuple[object, float]:
    """``tx.update`` jitted (state donated) and compiled for these arguments, and the seconds
    that took (trace, lowering and XLA compile)."""
    t0 = time.perf_counter()
    update = jax.jit(tx.update, donate_argnums=1).lower(grads, state, params).compile()
    return update, time.perf_counter() - t0


def time_cycles(call, carry, cycles: int, every: int) -> tuple[float, float, object]:
    """Run ``carry = call(carry)`` ``cycles * every + 1`` times; median seconds of the
    steady calls and of the refresh calls (``i % every == 0``), and the last carry.

    The first call is not timed: it also pays for allocation and first-call costs.
    """
    steady, refresh = [], []
    for i in range(cycles * every + 1):
        t0 = time.perf_counter()
        carry = call(carry)
        jax.block_until_ready(carry)
        if i:
            (refresh if i % every == 0 else steady).append(time.perf_counter() - t0)
    return (
        float(np.median(steady)),
        float(np.median(refresh)) if refresh else float("nan"),
        carry,
    )
