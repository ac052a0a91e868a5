"""Optimizer step time, compile time and state size, side by side in one run.

For each parameter set (``small``: {512x512, 512x2048, bias 2048}; ``resnet50``: the 161
ResNet-50 tensors) and each optimizer, prints: compile time, median *steady* step time
(no statistics refresh), median *refresh* step time (the step where Shampoo recomputes its
inverse roots / Sketchy runs its FD update; ``count % update_freq == 0``), and optimizer
state bytes per parameter (float32 = 4 bytes), in total and for the second-moment
statistics alone. Ratios are against our Shampoo measured in the same run.

The PyPI package ``precondition-opt`` 0.3.0 (Google's distributed_shampoo, the paper-era
reference with its frequent-directions mode) is measured too when installed.

    python benchmarks/optimizer_step.py --sets small resnet50 --cycles 3
"""

import argparse
import os

# Single-threaded OpenBLAS (JAX's CPU LAPACK): its busy-waiting threads make decompositions
# erratic as soon as anything else runs; set before numpy/jax load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import platform
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
from param_shapes import SETS, count  # noqa: E402

import sketchy  # noqa: E402
from sketchy import memory  # noqa: E402

F = 10  # update_freq of every preconditioned optimizer


def optimizers(include_reference: bool) -> dict[str, Callable[[], optax.GradientTransformation]]:
    common = dict(update_freq=F, start_preconditioning_step=0, block_size=1024)
    out = {
        "adamw (optax)": lambda: optax.adamw(1e-3),
        "shampoo": lambda: sketchy.shampoo(1e-3, **common),
        "sketchy r128": lambda: sketchy.sketchy(1e-3, rank=128, **common),
        "sketchy r256": lambda: sketchy.sketchy(1e-3, rank=256, **common),
        "sketchy r128 fd=eigh": lambda: sketchy.sketchy(1e-3, rank=128, fd_method="eigh", **common),
        "sketchy r256 fd=eigh": lambda: sketchy.sketchy(1e-3, rank=256, fd_method="eigh", **common),
        "sketchy r128 adafactor": lambda: sketchy.sketchy(
            1e-3, rank=128, graft="adafactor", **common
        ),
    }
    if include_reference:
        ref = reference_optimizers()
        out |= ref
    return out


def reference_optimizers() -> dict[str, Callable[[], optax.GradientTransformation]]:
    try:
        # precondition-opt 0.3.0 predates the removal of jax.tree_map & co.
        for old, new in [
            ("tree_map", jax.tree.map),
            ("tree_flatten", jax.tree.flatten),
            ("tree_unflatten", jax.tree.unflatten),
            ("tree_leaves", jax.tree.leaves),
            ("tree_structure", jax.tree.structure),
        ]:
            setattr(jax, old, new)
        from precondition import distributed_shampoo as ds
    except ImportError:
        print("precondition-opt not installed: reference rows skipped", file=sys.stderr)
        return {}

    def make(**kw):
        return lambda: ds.distributed_shampoo(
            1e-3,
            block_size=1024,
            beta1=0.9,
            beta2=0.999,
            graft_type=ds.GraftingType.RMSPROP_NORMALIZED,
            start_preconditioning_step=1,
            preconditioning_compute_steps=F,
            eigh=True,
            **kw,
        )

    return {
        "ref distributed_shampoo": make(statistics_compute_steps=1),
        "ref distributed_shampoo FD r128": make(
            statistics_compute_steps=F,
            frequent_directions=True,
            compression_rank=128,
            reuse_preconditioner=True,  # the FD mode asserts without it
        ),
    }


def measure(tx: optax.GradientTransformation, shapes: dict, cycles: int) -> dict:
    params = {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()}
    keys = jax.random.split(jax.random.PRNGKey(0), len(shapes))
    grads = {k: jax.random.normal(key, s) for key, (k, s) in zip(keys, shapes.items(), strict=True)}
    state = tx.init(params)
    t0 = time.perf_counter()
    update = jax.jit(tx.update, donate_argnums=1).lower(grads, state, params).compile()
    compile_s = time.perf_counter() - t0
    steady, refresh = [], []
    for step in range(cycles * F + 1):
        t0 = time.perf_counter()
        _, state = update(grads, state, params)
        jax.block_until_ready(state)
        dt = time.perf_counter() - t0
        if step == 0:
            continue  # first call also pays for allocation
        (refresh if step % F == 0 else steady).append(dt)
    per_param = memory.bytes_per_param(state, params)
    return {
        "compile_s": compile_s,
        "steady_ms": 1e3 * float(np.median(steady)),
        "refresh_ms": 1e3 * float(np.median(refresh)) if refresh else float("nan"),
        "state_per_param": per_param["total"],
        "stats_per_param": per_param["statistics"] + per_param["preconditioners"],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=["small", "resnet50"], choices=sorted(SETS))
    ap.add_argument("--cycles", type=int, default=2, help="refresh cycles of update_freq steps")
    ap.add_argument("--no-reference", action="store_true", help="skip precondition-opt rows")
    ap.add_argument("--only", nargs="*", default=None, help="substrings of optimizer names to run")
    args = ap.parse_args(argv)
    print(
        f"# jax {jax.__version__}, {jax.devices()[0].platform}, {platform.processor() or ''}"
        f" {os.cpu_count()} cpus, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']};"
        f" update_freq={F}, block_size=1024"
    )
    for set_name in args.sets:
        shapes = SETS[set_name]()
        print(f"\n## {set_name}: {len(shapes)} tensors, {count(shapes):,} parameters\n")
        header = (
            "optimizer",
            "compile s",
            "steady ms",
            "refresh ms",
            "refresh / shampoo",
            "state B/param/4",
            "2nd-moment B/param/4",
        )
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        rows = {}
        for name, make in optimizers(not args.no_reference).items():
            if args.only and not any(s in name for s in args.only):
                continue
            rows[name] = r = measure(make(), shapes, args.cycles)
            base = rows.get("shampoo", {}).get("refresh_ms", float("nan"))
            rel = r["refresh_ms"] / base if "shampoo" in rows else float("nan")
            print(
                f"| {name} | {r['compile_s']:.1f} | {r['steady_ms']:.1f} | "
                f"{r['refresh_ms']:.1f} | {rel:.2f} | {r['state_per_param']:.2f} | "
                f"{r['stats_per_param']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
