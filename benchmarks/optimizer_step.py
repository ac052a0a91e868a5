"""Optimizer step time, compile time and state size, side by side in one run.

For each parameter set (``small``: {512x512, 512x2048, bias 2048}; ``resnet50``: the 161
ResNet-50 tensors) and each optimizer, prints: compile time and its ratio to AdamW's,
median *steady* step time (no statistics refresh), median *refresh* step time (the step
where Shampoo recomputes its inverse roots / Sketchy runs its FD update;
``count % update_freq == 0``), the *amortized* step ``((F - 1) steady + refresh) / F`` and
its ratio to our Shampoo's, and optimizer state bytes per parameter (float32 = 4 bytes), in
total and for the second-moment statistics alone. Ratios are against rows measured in the
same run.

The PyPI package ``precondition-opt`` 0.3.0 (Google's distributed_shampoo, the paper-era
reference with its frequent-directions mode) is measured too when installed. Its tearfree
Shampoo and Sketchy are in no release: ``--tearfree-src PATH`` (the root of a source checkout
of google-research/precondition) measures them too, and Sketchy r128's amortized step
against tearfree Sketchy's in the paired rounds.

``--scaling`` times one refresh of a single square ``d x d`` block (``d`` = 256 .. 4096,
rank ``k = 128``) for each FD method and for Shampoo (statistics + ``eigh`` inverse root)
and prints the fitted exponent ``a`` of ``time ~ d^a``.

    python benchmarks/optimizer_step.py --sets small resnet50 --cycles 3
    python benchmarks/optimizer_step.py --sets  # the scaling table alone

``--paired N`` (default 3) then measures the rows the targets name (AdamW, Shampoo, Sketchy
r128 and r256) in ``N`` rounds, each compiling and timing every one of them in turn, and
prints the per-round ratios: on a shared machine rows timed minutes apart drift, rows of
one round drift together. A last table compares the measured ratios (paired medians where
measured) and exponents with issue 12's targets.
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
from paired_rounds import paired, paired_ratios, print_paired  # noqa: E402
from param_shapes import SETS, count  # noqa: E402
from reference_optimizers import (  # noqa: E402
    TEARFREE_SKETCHY,
    check_tearfree_src,
    distributed_shampoo_rows,
    tearfree_rows,
)
from step_timing import bench_inputs, compile_update, time_cycles  # noqa: E402

import sketchy  # noqa: E402
from sketchy import memory  # noqa: E402

F = 10  # update_freq of every preconditioned optimizer
PAIRED = ("adamw (optax)", "shampoo", "sketchy r128", "sketchy r256")  # the targets' rows


def optimizers(
    include_reference: bool, tearfree_src: str | None = None
) -> dict[str, Callable[[], optax.GradientTransformation]]:
    """Our rows, ``distributed_shampoo``'s (``include_reference``) and tearfree's (a source
    checkout at ``tearfree_src``), see :mod:`reference_optimizers`."""
    common = dict(update_freq=F, start_preconditioning_step=0, block_size=1024)
    out = {
        "adamw (optax)": lambda: optax.adamw(1e-3),
        "shampoo": lambda: sketchy.shampoo(1e-3, **common),
        "shampoo statistics_freq=F": lambda: sketchy.shampoo(1e-3, statistics_freq=F, **common),
        "shampoo max_merged_dim=4096": lambda: sketchy.shampoo(1e-3, max_merged_dim=4096, **common),
        "sketchy r128": lambda: sketchy.sketchy(1e-3, rank=128, **common),
        "sketchy r256": lambda: sketchy.sketchy(1e-3, rank=256, **common),
        "sketchy r128 fd=svd": lambda: sketchy.sketchy(1e-3, rank=128, fd_method="svd", **common),
        "sketchy r256 fd=svd": lambda: sketchy.sketchy(1e-3, rank=256, fd_method="svd", **common),
        "sketchy r128 chunk=128": lambda: sketchy.sketchy(1e-3, rank=128, fd_chunk=128, **common),
        "sketchy r256 chunk=256": lambda: sketchy.sketchy(1e-3, rank=256, fd_chunk=256, **common),
        "sketchy r256 max_merged_dim=4096": lambda: sketchy.sketchy(
            1e-3, rank=256, max_merged_dim=4096, **common
        ),
        "sketchy r128 adafactor": lambda: sketchy.sketchy(
            1e-3, rank=128, graft="adafactor", **common
        ),
    }
    if include_reference:
        out |= distributed_shampoo_rows(F)
    if tearfree_src:
        out |= tearfree_rows(tearfree_src, F)
    return out


def measure(tx: optax.GradientTransformation, shapes: dict, cycles: int) -> dict:
    params, grads = bench_inputs(shapes)
    state = tx.init(params)
    update, compile_s = compile_update(tx, grads, state, params)
    steady_s, refresh_s, state = time_cycles(
        lambda st: update(grads, st, params)[1], state, cycles, F
    )
    per_param = memory.bytes_per_param(state, params)
    steady_ms, refresh_ms = 1e3 * steady_s, 1e3 * refresh_s
    return {
        "compile_s": compile_s,
        "steady_ms": steady_ms,
        "refresh_ms": refresh_ms,
        "amortized_ms": ((F - 1) * steady_ms + refresh_ms) / F,
        "state_per_param": per_param["total"],
        "stats_per_param": per_param["statistics"] + per_param["preconditioners"],
    }


def ratio(rows: dict, name: str, base: str, key: str) -> float:
    if name not in rows or base not in rows:
        return float("nan")
    return rows[name][key] / rows[base][key]


def time_call(fn, *args, reps: int = 3) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def scaling(dims: list[int], rank: int, max_one_shot: int) -> dict[str, float]:
    """Refresh time of one square ``d x d`` block vs ``d`` at fixed rank; fitted exponents."""
    from sketchy.frequent_directions import fd_init, fd_update
    from sketchy.shampoo import inverse_root

    def fd(method, chunk):
        def refresh(state, x):
            return fd_update(state, x, decay=0.999, method=method, chunk=chunk)[0]

        return jax.jit(refresh)

    def shampoo_refresh(stat, x):
        stat = 0.999 * stat + 0.001 * jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
        return inverse_root(stat, 0.25, 1e-6)[0]

    methods = {
        "shampoo (eigh root)": None,
        "sketchy fd=eigh": ("eigh", None),
        "sketchy fd=svd": ("svd", None),
        f"sketchy chunk={rank}": ("eigh", rank),
    }
    print(f"\n## refresh of one d x d block, rank {rank} (ms; fitted exponent a: time ~ d^a)\n")
    print("| method | " + " | ".join(f"d={d}" for d in dims) + " | a |")
    print("|" + "---|" * (len(dims) + 2))
    rng = np.random.default_rng(0)
    exponents = {}
    for name, spec in methods.items():
        times = {}
        for d in dims:
            if spec is None or spec[1] is None:
                if d > max_one_shot:
                    continue
            x = jnp.asarray(rng.standard_normal((d, d)), jnp.float32)
            if spec is None:
                stat = jnp.asarray(np.cov(rng.standard_normal((d, 2 * d))), jnp.float32)
                times[d] = time_call(jax.jit(shampoo_refresh), stat, x)
            else:
                state = fd_init(d, rank)
                refresh = fd(*spec)
                state = refresh(state, x)  # a full sketch, as in steady state
                times[d] = time_call(refresh, state, x)
        ds = sorted(times)
        fit = np.polyfit(np.log(ds), np.log([times[d] for d in ds]), 1)[0] if len(ds) > 1 else 0
        cells = [f"{1e3 * times[d]:.1f}" if d in times else "-" for d in dims]
        print(f"| {name} | " + " | ".join(cells) + f" | {fit:.2f} |", flush=True)
        exponents[name] = float(fit)
    return exponents


# (description, measured value from the run, target): issue 12's item 6.
def targets(results: dict, exponents: dict, pairs: dict) -> list[tuple[str, float, float]]:
    """The ratios from the paired rounds (median) where they were run, else from the tables."""

    def measured(set_name, name, base, key):
        values = paired_ratios(pairs.get(set_name, {}), name, base, key)
        if values:
            return f" (median of {len(values)} paired)", float(np.median(values))
        return "", ratio(results.get(set_name, {}), name, base, key)

    out = []
    wanted = [("small", "sketchy r128", "shampoo", "amortized_ms", 0.35)]
    wanted.append(("small", "sketchy r128", TEARFREE_SKETCHY, "amortized_ms", 0.7))
    wanted.append(("resnet50", "sketchy r256", "shampoo", "amortized_ms", 0.5))
    for name in ("sketchy r256", "sketchy r128", "shampoo"):
        wanted.append(("resnet50", name, "adamw (optax)", "compile_s", 3.0))
    for set_name, name, base, key, target in wanted:
        how, value = measured(set_name, name, base, key)
        what = "amortized" if key == "amortized_ms" else "compile"
        base_name = base if base.startswith("ref") else base.split()[0]
        out.append((f"{set_name}: {name} {what} / {base_name}{how}", value, target))
    for name in ("sketchy fd=eigh", "sketchy chunk=128"):
        out.append(
            (
                f"refresh exponent in d, {name} (default: fd=eigh)",
                exponents.get(name, float("nan")),
                2.0,
            )
        )
    return out


def print_targets(rows: list[tuple[str, float, float]]) -> None:
    print("\n## targets (issue 12, item 6)\n")
    print("| quantity | measured | target | met |")
    print("|---|---|---|---|")
    for what, value, target in rows:
        met = "-" if np.isnan(value) else ("yes" if value <= target else "no")
        print(f"| {what} | {value:.2f} | <= {target:g} | {met} |", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line: parameter sets, cycles, optimizer selection and the scaling table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="*", default=["small", "resnet50"], choices=sorted(SETS))
    ap.add_argument("--cycles", type=int, default=2, help="refresh cycles of update_freq steps")
    ap.add_argument("--no-reference", action="store_true", help="skip precondition-opt rows")
    ap.add_argument(
        "--tearfree-src",
        default=None,
        help="root of a google-research/precondition source checkout: tearfree rows too",
    )
    ap.add_argument(
        "--paired",
        type=int,
        default=3,
        help="rounds of the paired measurement of the target rows (0: none)",
    )
    ap.add_argument("--only", nargs="*", default=None, help="substrings of optimizer names to run")
    ap.add_argument(
        "--scaling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refresh time vs d, fitted exponents (--no-scaling to skip)",
    )
    ap.add_argument("--scaling-dims", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    ap.add_argument("--scaling-rank", type=int, default=128)
    ap.add_argument(
        "--scaling-max-one-shot", type=int, default=2048, help="largest d for O(d^3) methods"
    )
    return ap.parse_args(argv)


def print_environment() -> None:
    """One line: jax, platform, CPUs, BLAS threads and the optimizers' common settings."""
    print(
        f"# jax {jax.__version__}, {jax.devices()[0].platform}, {platform.processor() or ''}"
        f" {os.cpu_count()} cpus, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']};"
        f" update_freq={F}, block_size=1024"
    )


COLUMNS = (
    "optimizer",
    "compile s",
    "compile / adamw",
    "steady ms",
    "refresh ms",
    "refresh / shampoo",
    "amortized ms",
    "amortized / shampoo",
    "state B/param/4",
    "2nd-moment B/param/4",
)


def run_set(
    set_name: str,
    include_reference: bool,
    tearfree_src: str | None,
    cycles: int,
    only: list[str] | None,
) -> dict[str, dict]:
    """Measures each selected optimizer on one parameter set, printing its row as it finishes."""
    shapes = SETS[set_name]()
    print(f"\n## {set_name}: {len(shapes)} tensors, {count(shapes):,} parameters\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    rows = {}
    for name, make in optimizers(include_reference, tearfree_src).items():
        if only and not any(s in name for s in only):
            continue
        rows[name] = r = measure(make(), shapes, cycles)
        print(
            f"| {name} | {r['compile_s']:.1f} | "
            f"{ratio(rows, name, 'adamw (optax)', 'compile_s'):.2f} | "
            f"{r['steady_ms']:.1f} | {r['refresh_ms']:.1f} | "
            f"{ratio(rows, name, 'shampoo', 'refresh_ms'):.2f} | {r['amortized_ms']:.1f} | "
            f"{ratio(rows, name, 'shampoo', 'amortized_ms'):.2f} | "
            f"{r['state_per_param']:.2f} | {r['stats_per_param']:.2f} |",
            flush=True,
        )
    return rows


def print_summary(rows: dict[str, dict]) -> None:
    """After a set's table: each Sketchy and reference row's two headline ratios."""
    print()
    for name in rows:
        if name.startswith("sketchy") or name.startswith("ref"):
            print(
                f"- {name}: amortized / shampoo "
                f"{ratio(rows, name, 'shampoo', 'amortized_ms'):.2f}, compile / adamw "
                f"{ratio(rows, name, 'adamw (optax)', 'compile_s'):.2f}"
            )


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.tearfree_src:
        try:
            check_tearfree_src(args.tearfree_src)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    print_environment()
    results: dict[str, dict] = {}
    pairs: dict[str, dict] = {}
    for set_name in args.sets:
        results[set_name] = run_set(
            set_name, not args.no_reference, args.tearfree_src, args.cycles, args.only
        )
        print_summary(results[set_name])
        if args.paired:
            makers = optimizers(include_reference=False, tearfree_src=args.tearfree_src)
            wanted = PAIRED + ((TEARFREE_SKETCHY,) if args.tearfree_src else ())
            names = [n for n in wanted if not args.only or any(s in n for s in args.only)]
            pairs[set_name] = paired(
                {n: makers[n] for n in names}, SETS[set_name](), args.paired, F
            )
            print_paired(set_name, pairs[set_name], (("sketchy r128", TEARFREE_SKETCHY),))
    exponents = {}
    if args.scaling:
        exponents = scaling(args.scaling_dims, args.scaling_rank, args.scaling_max_one_shot)
    print_targets(targets(results, exponents, pairs))


if __name__ == "__main__":
    main()
