"""KrADagrad's synthetic ill-conditioned quadratic: Shampoo needs float64, KrADagrad does not.

``f(W) = tr(W^T H0 W H1)`` with ``W`` of ``size x size`` and ``H_i = Q_i diag(lam) Q_i^T``:
``Q_i`` from the QR of a Gaussian matrix, ``lam = 10^(-(linspace(0, sqrt(c)))^2)`` rescaled
to a maximum of 10 (``c = log_cond``: condition ``10^c`` per factor, ``10^(2c)`` for the
Kronecker Hessian ``2 H1 (x) H0``). The settings follow the reference notebook
(the KrADagrad authors' public quadratic notebook): 250 steps, ``b2 = 1``, preconditioners every 3
steps from step 3, no blocking, no grafting, ``eps = 1e-8``; momentum 0.9 (Nesterov) for the
Kronecker methods (the reference's Shampoo default), none for SGD, Adam's defaults.

As in the reference, the loss and its gradient are computed in float64 and the gradient is
rounded to the run's dtype, so the runs differ only in the optimizer's arithmetic.

Usage: ``python launch/kradagrad_quadratic.py [--size 1536] [--runs sgd adam ...]``; one
JSON record per run in ``results/records/kradagrad_quadratic/<run>_n<size>.json``.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # the float64 Shampoo run; the others pin float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import yaml  # noqa: E402

import sketchy  # noqa: E402
from results.atomic import write_json  # noqa: E402
from sketchy.kradagrad import kradagrad, kradagrad_star  # noqa: E402

OUT = ROOT / "results" / "records" / "kradagrad_quadratic"
PROBLEM_SEED, INIT_SEED = 4750, 95054  # the reference notebook's seeds (its RNG was torch's)

# name -> (optimizer, learning rate, dtype, extra keyword arguments): the reference notebook's
# settings. Its "no grafting" (graft_type 0) still rescales Shampoo's and KrADagrad*'s
# direction to the gradient's norm (both run through its Shampoo.step): our graft="sgd". Its
# KrADagrad has its own step with no rescaling (graft="none"), starts from X = I (our eps=1)
# and damps with its matrix_eps (1e-8) and the Frobenius denominator.
RUNS = {
    "sgd": ("sgd", 1e-3, "float32", {}),
    "adam": ("adam", 1.0, "float32", {}),
    "shampoo_f64": ("shampoo", 5e-3, "float64", {"graft": "sgd"}),
    "shampoo_f32": ("shampoo", 5e-3, "float32", {"graft": "sgd"}),
    "kradagrad_star_f32": ("kradagrad_star", 5e-3, "float32", {"graft": "sgd"}),
    "kradagrad_f32": (
        "kradagrad",
        1e-2,
        "float32",
        {"graft": "none", "eps": 1.0, "damping": 1e-8, "denominator": "frobenius"},
    ),
}


def problem(size: int, log_cond: float, seed: int = PROBLEM_SEED):
    """``(H0, H1, lam)`` in float64 (NumPy)."""
    rng = np.random.default_rng(seed)
    lam = 10.0 ** (-(np.linspace(0.0, np.sqrt(log_cond), size) ** 2))
    lam = lam * (10.0 / lam.max())
    hs = []
    for _ in range(2):
        q, _ = np.linalg.qr(rng.standard_normal((size, size)))
        hs.append((q * lam) @ q.T)
    return hs[0], hs[1], lam


def make_optimizer(kind: str, lr: float, dtype: str, extra: dict, size: int):
    """The optimizer and the keyword arguments it was built with (for the record)."""
    if kind == "sgd":
        kw = {"learning_rate": lr}
        return optax.sgd(**kw), kw
    if kind == "adam":
        kw = {"learning_rate": lr, "b1": 0.9, "b2": 0.999, "eps": 1e-8}
        return optax.adam(**kw), kw
    kw = {
        "learning_rate": lr,
        "b1": 0.9,
        "nesterov": True,
        "block_size": size,  # no blocking
        "max_precond_dim": max(4096, size),
        "b2": 1.0,
        "eps": 1e-8,
        "update_freq": 3,
        "start_preconditioning_step": 3,
        "graft": "none",
    }
    if kind == "shampoo":
        kw["relative_eps"] = False  # the reference adds an absolute eps I before the root
    kw.update(extra)
    build = {"shampoo": sketchy.shampoo, "kradagrad_star": kradagrad_star, "kradagrad": kradagrad}
    return build[kind](**kw, dtype=jnp.dtype(dtype)), {**kw, "dtype": dtype}


def _find_counter(state, name: str) -> int:
    """Sum of the ``name`` fields of every state NamedTuple (e.g. Kronecker ``failures``)."""
    total, stack = 0, [state]
    while stack:
        s = stack.pop()
        if hasattr(s, "_fields"):
            if name in s._fields:
                total += int(getattr(s, name))
            stack.extend(getattr(s, f) for f in s._fields if f != name)
        elif isinstance(s, list | tuple):
            stack.extend(s)
    return total


def run(name: str, args, h0, h1) -> dict:
    kind, lr, dtype, extra = RUNS[name]
    lr = args.lr.get(name, lr)
    if kind not in ("sgd", "adam"):
        extra = {**extra, **args.set}
    tx, kwargs = make_optimizer(kind, lr, dtype, extra, args.size)
    h0j, h1j = jnp.asarray(h0), jnp.asarray(h1)

    def loss_fn(w):
        w64 = w.astype(jnp.float64)
        return jnp.sum(w64 * (h0j @ w64 @ h1j))

    @jax.jit
    def step(w, state):
        # H0, H1 symmetric: grad tr(W^T H0 W H1) = 2 H0 W H1, which the loss already forms
        # (half the float64 matmuls of autodiff).
        w64 = w.astype(jnp.float64)
        hw = h0j @ w64 @ h1j
        loss, g = jnp.sum(w64 * hw), (2.0 * hw).astype(w.dtype)
        updates, state = tx.update(g, state, w)
        return optax.apply_updates(w, updates), state, loss

    w = jnp.asarray(np.random.default_rng(INIT_SEED).standard_normal(h0.shape), dtype)
    state = tx.init(w)
    losses, step_times, diverged = [], [], False
    start = time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        w, state, loss = step(w, state)
        loss = float(loss)
        step_times.append(time.perf_counter() - t0)
        losses.append(loss)
        if not np.isfinite(loss) or loss > 1e30:
            diverged = True
            break
    final = float(jax.jit(loss_fn)(w))
    losses.append(final)
    wall = time.perf_counter() - start
    print(f"{name:20s} lr={lr:g} final={final:.6g} wall={wall:.1f}s", flush=True)
    return {
        "experiment": "kradagrad_quadratic",
        "run": name,
        "optimizer": kind,
        "dtype": dtype,
        "config": {
            "size": args.size,
            "log_cond": args.log_cond,
            "steps": args.steps,
            "problem_seed": PROBLEM_SEED,
            "init_seed": INIT_SEED,
            "gradient": "float64, rounded to dtype",
            "optimizer_kwargs": kwargs,
        },
        "loss": losses,  # loss[t]: before update t; loss[-1]: after the last update
        "final_loss": final,
        "diverged": diverged or not np.isfinite(final),
        "failures": _find_counter(state, "failures"),
        "wall_time_s": wall,
        "median_step_s": float(np.median(step_times[1:])) if len(step_times) > 1 else None,
        "hardware": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "device": str(jax.devices()[0]),
            "cpu_count": __import__("os").cpu_count(),
        },
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
        },
    }


def _value(text: str):
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return yaml.safe_load(text)  # true/false/null/strings


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1536)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--log-cond", type=float, default=4.0)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override a keyword of the Kronecker runs (YAML value, e.g. graft=none eps=1e-6)",
    )
    parser.add_argument("--lr", nargs="*", default=[], metavar="RUN=LR", help="override a run's lr")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--tag", default="", help="suffix of the record names (variants)")
    args = parser.parse_args(argv)
    args.lr = {k: float(v) for k, v in (item.split("=", 1) for item in args.lr)}
    args.set = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    h0, h1, _ = problem(args.size, args.log_cond)
    written = []
    for name in args.runs:
        record = run(name, args, h0, h1)
        written.append(write_json(args.out / f"{name}_n{args.size}{args.tag}.json", record))
    return written


if __name__ == "__main__":
    main()
