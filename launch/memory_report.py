"""Paper Fig. 1: optimizer-state memory of Adam, Shampoo and Sketchy on the full-size models.

Usage: ``python -m launch.memory_report [--models resnet50 conformer gnn] [--rank 256]
[--block-size 1024]``. No training and no device memory: parameters come from
``jax.eval_shape(workload.init, key)`` and optimizer states from
``jax.eval_shape(tx.init, params)``, so the numbers are exact for float32 states at any model
size. Writes one record per model to ``results/records/fig1_memory/<model>.json`` (read by
``results/plots/fig1_memory.py``).

Each record holds, per optimizer (``optax.adamw``; ``sketchy.shampoo`` and ``sketchy.sketchy``
with their defaults: RMSProp grafting, momentum), the state in bytes and in words (4 bytes)
per parameter by category (:func:`sketchy.memory.state_bytes`: statistics, preconditioners,
grafting, momentum, other) and, beside it, the paper's formulas evaluated on the model:

- ``paper_formula``: the paper's per-matrix counts (Fig. 1: Adam ``mn`` + ``mn``; Shampoo
  ``m^2 + n^2`` statistics and as many inverse roots, per ``block_size`` block; Sketchy
  ``d k + k + 1`` per block and axis, ``k = min(rank, d)``; :mod:`sketchy.memory`) summed
  over the model's matrices: every tensor with at least two non-unit dimensions, viewed as
  fan-in x fan-out (``prod(shape[:-1]) x shape[-1]``). Vectors (biases, norms) have no
  Kronecker factors; Adam's formula counts them too.
- ``block_formula``: the same per-axis counts on the blocks this library actually
  preconditions (:func:`sketchy.blocking.plan_blocks`: small dims merged up to
  ``block_size``, so a ``3x3xCxC`` kernel with ``C >= 128`` is a ``9 x C x C`` tensor with
  three factors, not a ``9C x C`` matrix; tensors with a dim above ``max_precond_dim`` are
  graft-only). It must equal the measured statistics and preconditioner bytes exactly (the
  report refuses to write otherwise).

and the paper's claim "4x at block 1024 / rank 256": Shampoo's second-moment statistics over
Sketchy's, for one full ``1024 x 1024`` block and for the whole model (measured and by the
paper's formula), with and without Shampoo's inverse roots.
"""

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import sketchy
from launch.run_record import write_record
from sketchy import memory
from sketchy.blocking import plan_blocks

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "records" / "fig1_memory"
WORD_BYTES = 4
OPTIMIZERS = ("adam", "shampoo", "sketchy")
MAX_PRECOND_DIM = 4096  # sketchy.shampoo / sketchy.sketchy default


def _resnet50():
    from workloads.imagenet import Imagenet

    kwargs = {"size": "paper", "num_classes": 1000, "image_size": 224}
    return Imagenet(**kwargs), "workloads.imagenet.Imagenet", kwargs


def _conformer():
    from workloads.librispeech import Librispeech

    kwargs = {"size": "paper", "vocab_size": 1024}
    return Librispeech(**kwargs), "workloads.librispeech.Librispeech", kwargs


def _gnn():
    from workloads.ogbg_molpcba import OgbgMolpcba

    kwargs = {"size": "paper"}
    return OgbgMolpcba(**kwargs), "workloads.ogbg_molpcba.OgbgMolpcba", kwargs


# name -> (description, factory returning (workload, class path, constructor kwargs))
MODELS: dict[str, tuple[str, Callable]] = {
    "resnet50": ("1,000 classes, 224 x 224 images (ImageNet)", _resnet50),
    "conformer": ("16 layers, width 512, vocabulary 1,024 (LibriSpeech)", _conformer),
    "gnn": ("jraph GraphNetwork, latent 256, 5 message-passing steps (ogbg-molpcba)", _gnn),
}


def optimizer(
    name: str, *, rank: int, block_size: int
) -> tuple[optax.GradientTransformation, dict]:
    """The optimizer ``name`` with the paper's memory settings, and its keyword arguments."""
    if name == "adam":
        return optax.adamw(1e-3), {"learning_rate": 1e-3}
    if name == "shampoo":
        kwargs = {"block_size": block_size, "max_precond_dim": MAX_PRECOND_DIM}
        return sketchy.shampoo(1e-3, **kwargs), {"learning_rate": 1e-3, **kwargs}
    if name == "sketchy":
        kwargs = {"rank": rank, "block_size": block_size, "max_precond_dim": MAX_PRECOND_DIM}
        return sketchy.sketchy(1e-3, **kwargs), {"learning_rate": 1e-3, **kwargs}
    raise ValueError(f"unknown optimizer {name!r}; use one of {OPTIMIZERS}")


def _add(total: dict, part: dict) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


def paper_formula(shapes: list[tuple[int, ...]], *, rank: int, block_size: int) -> dict:
    """The paper's second-moment counts (floats) summed over the model's matrices.

    Matrices are the tensors with at least two non-unit dims, viewed as fan-in x fan-out.
    Adam's diagonal also covers the vectors; Shampoo and Sketchy have no factor for them.
    """
    out = {name: {"statistics": 0, "preconditioners": 0} for name in OPTIMIZERS}
    for shape in shapes:
        dims = [d for d in shape if d != 1]
        if len(dims) < 2:
            out["adam"]["statistics"] += math.prod(dims)
            continue
        m, n = math.prod(dims[:-1]), dims[-1]
        out["adam"]["statistics"] += memory.adam_floats(m, n)["statistics"]
        _add(out["shampoo"], memory.shampoo_floats(m, n, block_size))
        _add(out["sketchy"], memory.sketchy_floats(m, n, rank, block_size))
    return out


def block_formula(shapes: list[tuple[int, ...]], *, rank: int, block_size: int) -> dict:
    """The per-axis counts (floats) on this library's block plans (see the module doc)."""
    shampoo = sketch = 0
    for shape in shapes:
        plan = plan_blocks(shape, block_size, MAX_PRECOND_DIM)
        if plan is None:
            continue
        shampoo += plan.total_blocks * sum(d * d for d in plan.block_shape)
        sketch += plan.total_blocks * sum(
            d * min(rank, d) + min(rank, d) + 1 for d in plan.block_shape
        )
    return {
        "shampoo": {"statistics": shampoo, "preconditioners": shampoo},
        "sketchy": {"statistics": sketch, "preconditioners": 0},
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def check_4x(measured: dict, formula: dict, *, rank: int, block_size: int) -> dict:
    """Shampoo's second-moment memory over Sketchy's: one full block, and the whole model."""
    d = block_size
    k = min(rank, d)
    sh, sk = measured["shampoo"]["bytes"], measured["sketchy"]["bytes"]
    fsh, fsk = formula["shampoo"], formula["sketchy"]
    return {
        "paper_claim": 4.0,
        "one_block": {
            "shampoo_statistics_floats": d * d,
            "sketchy_statistics_floats": d * k + k + 1,
            "statistics_ratio": d * d / (d * k + k + 1),
            "with_roots_ratio": 2 * d * d / (d * k + k + 1),
        },
        "model_measured": {
            "statistics_ratio": _ratio(sh["statistics"], sk["statistics"]),
            "with_roots_ratio": _ratio(
                sh["statistics"] + sh["preconditioners"], sk["statistics"] + sk["preconditioners"]
            ),
        },
        "model_paper_formula": {
            "statistics_ratio": _ratio(fsh["statistics"], fsk["statistics"]),
            "with_roots_ratio": _ratio(
                fsh["statistics"] + fsh["preconditioners"],
                fsk["statistics"] + fsk["preconditioners"],
            ),
        },
    }


def report(params, *, rank: int = 256, block_size: int = 1024) -> dict:
    """Memory of every optimizer on ``params`` (arrays or ``jax.ShapeDtypeStruct`` s)."""
    leaves = jax.tree.leaves(params)
    shapes = [tuple(int(d) for d in x.shape) for x in leaves]
    num_params = memory.param_count(params)
    matrices = [s for s in shapes if sum(d != 1 for d in s) >= 2]
    plans = [plan_blocks(s, block_size, MAX_PRECOND_DIM) for s in shapes]
    measured = {}
    for name in OPTIMIZERS:
        tx, kwargs = optimizer(name, rank=rank, block_size=block_size)
        state = jax.eval_shape(tx.init, params)
        nbytes = memory.state_bytes(state)
        measured[name] = {
            "kwargs": kwargs,
            "bytes": nbytes,
            "words_per_param": {c: v / (WORD_BYTES * num_params) for c, v in nbytes.items()},
            "second_moment_words_per_param": (nbytes["statistics"] + nbytes["preconditioners"])
            / (WORD_BYTES * num_params),
        }
    blocks = block_formula(shapes, rank=rank, block_size=block_size)
    for name, counts in blocks.items():
        for cat, floats in counts.items():
            got = measured[name]["bytes"][cat]
            if got != WORD_BYTES * floats:
                raise AssertionError(
                    f"{name} {cat}: measured {got} bytes, the block formula says "
                    f"{WORD_BYTES * floats}; sketchy.memory and the optimizer state disagree"
                )
    formula = paper_formula(shapes, rank=rank, block_size=block_size)
    return {
        "config": {
            "rank": rank,
            "block_size": block_size,
            "max_precond_dim": MAX_PRECOND_DIM,
            "word_bytes": WORD_BYTES,
            "dtype": "float32",
        },  # fmt: skip
        "num_params": num_params,
        "num_tensors": len(shapes),
        "num_matrices": len(matrices),
        "params_in_matrices": sum(math.prod(s) for s in matrices),
        "params_kronecker_preconditioned": sum(
            math.prod(s) for s, p in zip(shapes, plans, strict=True) if p is not None
        ),
        # Where the library's blocks differ from the paper's fan-in x fan-out matrices:
        # matrices left to the graft (a dim above max_precond_dim), and tensors merged to
        # three or more dims (one factor per dim); distinct (shape, merged shape) pairs.
        "graft_only_matrices": sorted(
            {s for s, p in zip(shapes, plans, strict=True) if p is None and s in matrices}
        ),
        "tensors_with_more_than_two_factors": sorted(
            {(s, p.merged) for s, p in zip(shapes, plans, strict=True) if p and len(p.merged) > 2}
        ),
        "optimizers": measured,
        "paper_formula": {
            name: {**c, "second_moment_words_per_param": sum(c.values()) / num_params}
            for name, c in formula.items()
        },
        "block_formula": blocks,
        "check_4x": check_4x(measured, formula, rank=rank, block_size=block_size),
    }


def model_record(model: str, *, rank: int = 256, block_size: int = 1024) -> dict:
    """The record of one of :data:`MODELS` (abstract init: no parameter is allocated)."""
    description, factory = MODELS[model]
    start = time.perf_counter()
    workload, class_path, kwargs = factory()
    params, _ = jax.eval_shape(workload.init, jax.random.key(0))
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), params)
    record = report(params, rank=rank, block_size=block_size)
    return {
        "model": model,
        "description": description,
        "workload": {"class": class_path, "kwargs": kwargs},
        **record,
        "wall_time_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=OUT, help="record directory")
    args = parser.parse_args(argv)
    written = []
    for model in args.models:
        record = model_record(model, rank=args.rank, block_size=args.block_size)
        path = write_record(args.out / f"{model}.json", record)
        wpp = {n: record["optimizers"][n]["words_per_param"]["total"] for n in OPTIMIZERS}
        ratio = record["check_4x"]["model_measured"]["statistics_ratio"]
        print(
            f"{model}: {record['num_params']:,} params; words/param "
            + ", ".join(f"{n} {v:.3f}" for n, v in wpp.items())
            + f"; Shampoo/Sketchy statistics {ratio:.2f}x; {record['wall_time_s']:.1f} s"
            + f" -> {path}"
        )
        written.append(path)
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
