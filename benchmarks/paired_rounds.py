"""Paired rounds: optimizers compiled and timed in turn, round after round, for ratios that a
shared machine's drift does not skew (used by ``optimizer_step.py --paired``)."""

import numpy as np
from step_timing import bench_inputs, compile_update, time_cycles


def paired(makers: dict, shapes: dict, rounds: int, every: int) -> dict[str, dict[str, list]]:
    """``{name: {"compile_s": [...], "amortized_ms": [...]}}``, one entry per round.

    Each round compiles every optimizer's update afresh and then runs one refresh cycle
    (``every`` steps) of each, one optimizer after the other, so a slow spell of a shared
    machine hits every row of the round alike; ratios are then taken round by round. (Rows
    measured one after another drifted by up to 50% between runs on a 2-core machine.)
    """
    params, grads = bench_inputs(shapes)
    states = {n: make().init(params) for n, make in makers.items()}
    out = {n: {"compile_s": [], "amortized_ms": []} for n in makers}
    for _ in range(rounds):
        updates = {}
        for n, make in makers.items():
            updates[n], seconds = compile_update(make(), grads, states[n], params)
            out[n]["compile_s"].append(seconds)
        for n in makers:
            steady_s, refresh_s, states[n] = time_cycles(
                lambda st, u=updates[n]: u(grads, st, params)[1], states[n], 1, every
            )
            out[n]["amortized_ms"].append(1e3 * ((every - 1) * steady_s + refresh_s) / every)
    return out


def paired_ratios(runs: dict, name: str, base: str, key: str) -> list[float]:
    """``runs[name][key] / runs[base][key]`` round by round (empty if either is missing)."""
    if name not in runs or base not in runs:
        return []
    return [a / b for a, b in zip(runs[name][key], runs[base][key], strict=True)]


def print_paired(set_name: str, runs: dict, against: tuple[tuple[str, str], ...] = ()) -> None:
    """Per-round ratios of each row (Sketchy's amortized step to Shampoo's, every compile time
    to AdamW's), then each ``(name, base)`` of ``against`` (amortized), and their medians."""
    print(f"\n## {set_name}, paired rounds (each round: every row compiled and timed in turn)\n")
    print("| ratio | per round | median |")
    print("|---|---|---|")
    rows = [
        (name, base, key)
        for name in runs
        for key, base in (("amortized_ms", "shampoo"), ("compile_s", "adamw (optax)"))
        if name != base and (key == "compile_s" or name.startswith("sketchy"))
    ]
    for name, base, key in rows + [(n, b, "amortized_ms") for n, b in against]:
        values = paired_ratios(runs, name, base, key)
        if values:
            cells = ", ".join(f"{v:.2f}" for v in values)
            what = key.split("_")[0]
            print(f"| {name} {what} / {base} | {cells} | {np.median(values):.2f} |")
