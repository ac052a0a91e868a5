"""What the jit compile time of Sketchy's update is made of, side by side in rounds.

The same optimizer (``sketchy.sketchy``: RMSProp graft, Nesterov momentum, the finiteness
wrapper) is compiled whole and with parts of its Kronecker rule replaced by no-ops through
the public :class:`sketchy.KroneckerRule`, next to AdamW and the first-order tail alone:

- ``first-order tail``: the RMSProp graft direction + momentum + lr + ``apply_if_finite``;
- ``kronecker, no FD, no apply``: ``scale_by_kronecker`` with a statistics step that leaves
  the factors as they are and an identity preconditioner (what is left is the blocking,
  stacking, finiteness checks and grafting);
- ``kronecker, no FD``: the same with Sketchy's preconditioner applied;
- ``sketchy``: the whole update (its FD step every ``update_freq`` steps included).

Each round compiles every row once (``jit(tx.update).lower().compile()``, the same timing
as ``optimizer_step.py``), so rows of one round share the machine's state; the table gives
each row's per-round ratio to AdamW and the median, then the parts as differences of
medians. Compile time on XLA's CPU backend follows the number of distinct kernels, so the
parts say where a compile-time target can and cannot be met.

    python benchmarks/compile_floor.py --set resnet50 --rank 256 --rounds 3
"""

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as optimizer_step.py: set before jax
import sys

import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
from param_shapes import SETS, count  # noqa: E402
from step_timing import bench_inputs, compile_update  # noqa: E402

import sketchy  # noqa: E402
from sketchy.grafting import as_graft  # noqa: E402
from sketchy.optimizer_chain import with_momentum_and_lr  # noqa: E402
from sketchy.sketchy import sketchy_rule  # noqa: E402

# sketchy.sketchy's defaults, passed explicitly to every row so that the rows differ only in
# the parts they remove.
LR, B2, EPS, GRAFT_EPS, F, START = 1e-3, 0.999, 1e-6, 1e-8, 10, 10


def _no_statistics(factors, block, count):
    del block, count
    return factors, jnp.zeros((), jnp.int32)


def _identity_apply(factor, y, exponent):
    del factor, exponent
    return y


def optimizers(rank: int) -> dict:
    """``{row: () -> optax.GradientTransformation}``, the rows of the table in order."""
    rule = sketchy_rule(
        rank=rank, b2=B2, eps=EPS, relative_eps=True, update_freq=F, tail_decay="b2",
        fd_method="eigh",
    )  # fmt: skip
    graft = lambda: as_graft("rmsprop", B2, GRAFT_EPS)  # noqa: E731

    def kronecker(r):
        direction = sketchy.scale_by_kronecker(r, graft=graft(), start_preconditioning_step=START)
        return with_momentum_and_lr(direction, LR, nesterov=True)

    no_fd = rule._replace(update_block=_no_statistics)
    return {
        "adamw (optax)": lambda: optax.adamw(LR),
        "first-order tail": lambda: with_momentum_and_lr(graft(), LR, nesterov=True),
        "kronecker, no FD, no apply": lambda: kronecker(
            no_fd._replace(apply_factor=_identity_apply)
        ),
        "kronecker, no FD": lambda: kronecker(no_fd),
        "sketchy": lambda: sketchy.sketchy(
            LR,
            rank=rank,
            b2=B2,
            eps=EPS,
            graft_eps=GRAFT_EPS,
            update_freq=F,
            start_preconditioning_step=START,
        ),  # fmt: skip
    }


PARTS = (  # (name, row, row it adds to)
    ("first-order tail", "first-order tail", None),
    ("blocking, stacking, checks, graft norms", "kronecker, no FD, no apply", "first-order tail"),
    ("preconditioner apply", "kronecker, no FD", "kronecker, no FD, no apply"),
    ("FD step", "sketchy", "kronecker, no FD"),
)


def measure(makers: dict, shapes: dict, rounds: int) -> dict[str, list[float]]:
    params, grads = bench_inputs(shapes)
    seconds = {name: [] for name in makers}
    warm = next(iter(makers.values()))()  # untimed: the first compile also pays JAX's set-up
    compile_update(warm, grads, warm.init(params), params)
    for r in range(rounds):
        for name, make in makers.items():
            tx = make()
            _, s = compile_update(tx, grads, tx.init(params), params)
            seconds[name].append(s)
            print(f"round {r + 1}/{rounds}: {name} {s:.2f} s", flush=True)
    return seconds


def print_table(seconds: dict[str, list[float]], base: str = "adamw (optax)") -> None:
    ratios = {n: [s / b for s, b in zip(v, seconds[base], strict=True)] for n, v in seconds.items()}
    med = {n: float(np.median(v)) for n, v in ratios.items()}
    print("\n| update | compile s per round | / adamw per round | / adamw median |")
    print("|---|---|---|---|")
    for name, values in seconds.items():
        per = ", ".join(f"{s:.2f}" for s in values)
        rat = ", ".join(f"{x:.2f}" for x in ratios[name])
        print(f"| {name} | {per} | {rat} | {med[name]:.2f} |")
    print("\n| part | / adamw (difference of medians) |")
    print("|---|---|")
    for part, row, below in PARTS:
        print(f"| {part} | {med[row] - (med[below] if below else 0.0):.2f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", choices=sorted(SETS), default="resnet50")
    p.add_argument("--rank", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.rank < 1:
        p.error(f"--rounds and --rank must be >= 1, got {args.rounds} and {args.rank}")
    shapes = SETS[args.set]()
    print(f"## {args.set}: {len(shapes)} tensors, {count(shapes):,} parameters, rank {args.rank}")
    print_table(measure(optimizers(args.rank), shapes, args.rounds))


if __name__ == "__main__":
    main()
