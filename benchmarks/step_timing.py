"""The steady/refresh timing loop shared by the benchmarks."""

import time

import jax
import numpy as np


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
