"""End-to-end training-step time of a workload under each optimizer, side by side in one run.

For the workload's real model and a real batch of its mini data (forward, backward,
optimizer update, BatchNorm statistics: the trainer's own jitted ``train_step``), prints per
optimizer: compile time, median *steady* step (no preconditioner refresh), median
*refresh* step (``count % update_freq == 0``: Shampoo's inverse roots, Sketchy's FD
update), the *amortized* step ``((F - 1) steady + refresh) / F`` and its ratio to AdamW's
amortized step measured in the same run, and optimizer words (4 bytes) per parameter.

    python benchmarks/workload_step.py --workload imagenet            # ResNet-50, 32 px, batch 64
    python benchmarks/workload_step.py --workload imagenet --size tiny --cycles 1
"""

import argparse
import functools
import os

# Single-threaded OpenBLAS (JAX's CPU LAPACK): its busy-waiting threads make decompositions
# erratic as soon as anything else runs; set before numpy/jax load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import sketchy  # noqa: E402
from launch.train_step import init_train_state, train_step  # noqa: E402
from sketchy import memory  # noqa: E402

F = 10  # update_freq of the preconditioned optimizers (the paper's)


def make_workload(name: str, size: str, image_size: int):
    if name == "imagenet":
        from workloads.imagenet import Imagenet

        return Imagenet(size=size, image_size=image_size)
    if name == "librispeech":
        from workloads.librispeech import Librispeech

        return Librispeech(size=size)
    raise SystemExit(f"error: unknown workload {name!r}; use imagenet or librispeech")


def optimizers(rank: int) -> dict:
    common = dict(update_freq=F, start_preconditioning_step=0, block_size=1024)
    return {
        "adamw (optax)": lambda lr: optax.adamw(lr),
        "shampoo": lambda lr: sketchy.shampoo(lr, **common),
        f"sketchy r{rank}": lambda lr: sketchy.sketchy(lr, rank=rank, **common),
    }


def measure(workload, make_tx, batch, cycles: int) -> dict:
    schedule = optax.constant_schedule(1e-4)
    tx = make_tx(schedule)
    state = jax.jit(functools.partial(init_train_state, workload, tx))(jax.random.key(0))
    step = jax.jit(functools.partial(train_step, workload, tx, schedule), donate_argnums=0)
    t0 = time.perf_counter()
    step = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    steady, refresh = [], []
    for i in range(cycles * F + 1):
        t0 = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        # The optimizer's count before this step was i: a refresh when i % F == 0 (skip i=0,
        # which also pays for first-call overheads).
        if i:
            (refresh if i % F == 0 else steady).append(time.perf_counter() - t0)
    n_params = memory.param_count(state.params)
    # state_bytes has the categories and their "total": summing every value counted it twice.
    words = memory.state_bytes(state.opt_state)["total"] / (4 * n_params)
    steady_s, refresh_s = float(np.median(steady)), float(np.median(refresh))
    return {
        "compile_s": compile_s,
        "steady_s": steady_s,
        "refresh_s": refresh_s,
        "amortized_s": ((F - 1) * steady_s + refresh_s) / F,
        "words_per_param": words,
        "n_params": n_params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="imagenet")
    parser.add_argument("--size", default="paper")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--cycles", type=int, default=2, help="refresh cycles of F steps")
    args = parser.parse_args()
    workload = make_workload(args.workload, args.size, args.image_size)
    batch = next(workload.batches("train", args.batch_size, seed=0))
    print(f"{args.workload} ({args.size}), batch {args.batch_size}, update_freq {F}; "
          f"jax {jax.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")  # fmt: skip
    rows = {name: measure(workload, make, batch, args.cycles)
            for name, make in optimizers(args.rank).items()}  # fmt: skip
    base = rows["adamw (optax)"]["amortized_s"]
    print(f"parameters: {next(iter(rows.values()))['n_params']:,}")
    print("| optimizer | compile s | steady ms | refresh ms | amortized ms | / AdamW "
          "| state words / param |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for name, r in rows.items():
        print(f"| {name} | {r['compile_s']:.1f} | {1e3 * r['steady_s']:.0f} | "
              f"{1e3 * r['refresh_s']:.0f} | {1e3 * r['amortized_s']:.0f} | "
              f"{r['amortized_s'] / base:.2f} | {r['words_per_param']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
