"""Paper Fig. 3's Gaussian null baseline: the intrinsic dimension of an EMA of random outer
products.

Usage: ``python -m launch.null_baseline [--dim 1024] [--draws 10000] [--trials 20]
[--d 1 64] [--b2 0.999]``. For each ``d``, each of ``trials`` independent trials draws
``x_0, ..., x_{n-1}`` (``n = draws``), each a ``dim x d`` matrix of iid N(0, 1) entries, and
forms ``C = sum_i b2^i x_i x_i^T`` (the EMA statistic Shampoo would hold after ``n`` steps
of pure-noise gradients); it reports the intrinsic dimension ``tr C / lambda_max(C)`` (and
the share of ``tr C`` in the top ``dim / 4`` eigenvalues). The paper (Sec. 5.2) gives, at
``dim = 1024``, ``b2 = 0.999``, 10,000 draws, over 20 trials: 324.63 (0.52) for ``d = 1``
and 862.13 (0.25) for ``d = 64``, against at most 105 for the factors of real networks.
Writes ``results/records/fig3_null_baseline/d<d>.json`` with every trial, the mean and
1.96 x its standard error, the measured run time, and an analytic prediction:

``E tr C = dim * d * sum_i b2^i`` exactly, and ``lambda_max`` tends, as ``dim`` grows, to
the right edge ``lambda_+`` of the limiting spectrum of ``C = sum_j w_j z_j z_j^T``
(``N = n d`` columns ``z_j ~ N(0, I_dim)``, ``w_j = b2^i`` for the ``d`` columns of draw
``i``). With ``m`` the Stieltjes transform ``(1/dim) tr (C - zI)^-1``, Sherman-Morrison on
``1 + z m = (1/dim) tr(C (C - zI)^-1)`` and ``z_j^T Q z_j ~ tr Q`` give the generalized
Marchenko-Pastur equation ``z(m) = -1/m + sum_j w_j / (1 + dim w_j m)``, and
``lambda_+ = min z(m)`` over ``m`` in ``(-1 / (dim max_j w_j), 0)`` (the edge is where
``z'(m) = 0``). The prediction ``E tr C / lambda_+`` is 321.80 for ``d = 1`` and 860.67 for
``d = 64`` at the paper's sizes; at finite ``dim`` the largest eigenvalue falls a little
below the edge on average (Tracy-Widom fluctuations of relative size ~ ``dim^(-2/3)``), so
the measured intrinsic dimension sits slightly above the prediction.

Cost: forming ``C`` is ``dim^2 n d`` multiply-adds per trial (0.67 TFLOP for ``d = 64`` at
the paper's size, half that with the symmetric product numpy uses for ``X @ X.T``). Draws
and products are float32 on the CPU (numpy's ziggurat normals and BLAS ``syrk``), in
chunks of about 8,192 columns; ``C`` is accumulated and decomposed in float64; trials run
on ``--workers`` threads (numpy releases the GIL). Keep ``OPENBLAS_NUM_THREADS=1``.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per worker; must precede numpy

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import minimize_scalar  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "records" / "fig3_null_baseline"
CHUNK_COLUMNS = 8192


def one_trial(
    dim: int, d: int, draws: int, b2: float, seed: int, trial: int, top_k: int
) -> dict[str, float]:
    """``tr C``, ``lambda_max``, intrinsic dimension and top-``top_k`` share of one trial."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, d, trial]))
    sqrt_w = np.sqrt(b2 ** np.arange(draws, dtype=np.float64)).astype(np.float32)
    steps = max(1, CHUNK_COLUMNS // d)
    cov = np.zeros((dim, dim), np.float64)
    for start in range(0, draws, steps):
        scale = np.repeat(sqrt_w[start : start + steps], d)  # column i*d + j has weight b2^i
        x = rng.standard_normal((dim, scale.size), dtype=np.float32)
        x *= scale
        cov += x @ x.T  # numpy's symmetric rank-k product (syrk) for x @ x.T
    lam = np.linalg.eigvalsh(cov)  # ascending
    trace = float(np.trace(cov))
    return {
        "trace": trace,
        "lambda_max": float(lam[-1]),
        "intrinsic_dim": trace / float(lam[-1]),
        "top_k_share": float(lam[-top_k:].sum() / lam.sum()),
    }


def simulate(
    dim: int, d: int, draws: int, trials: int, b2: float, *, seed: int = 0, workers: int = 1
) -> list[dict[str, float]]:
    """Every trial's numbers, in trial order (deterministic in ``seed``, not in ``workers``)."""
    top_k = max(1, dim // 4)
    args = [(dim, d, draws, b2, seed, t, top_k) for t in range(trials)]
    if workers <= 1:
        return [one_trial(*a) for a in args]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda a: one_trial(*a), args))


def expected_trace(dim: int, d: int, draws: int, b2: float) -> float:
    """``E tr C = dim d sum_{i<n} b2^i`` (exact)."""
    return dim * d * float(np.sum(b2 ** np.arange(draws, dtype=np.float64)))


def spectrum_edge(dim: int, d: int, draws: int, b2: float) -> float:
    """``lambda_+``: the right edge of the limiting spectrum of ``C`` (module doc)."""
    w = b2 ** np.arange(draws, dtype=np.float64)
    top = dim * w.max()

    def z(t):  # m = -t / (dim max w), t in (0, 1)
        m = -t / top
        return -1.0 / m + d * np.sum(w / (1.0 + dim * w * m))

    res = minimize_scalar(z, bounds=(1e-12, 1 - 1e-12), method="bounded", options={"xatol": 1e-13})
    return float(res.fun)


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (0 for a single value)."""
    v = np.asarray(values, np.float64)
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    return float(v.mean()), se


def record(
    dim: int, d: int, draws: int, trials: int, b2: float, *, seed: int = 0, workers: int = 1
) -> dict:
    """The record of one ``d``: config, every trial, summaries, prediction, run time."""
    start, cpu = time.perf_counter(), time.process_time()
    per_trial = simulate(dim, d, draws, trials, b2, seed=seed, workers=workers)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    summary = {}
    for key in ("intrinsic_dim", "top_k_share", "trace", "lambda_max"):
        mean, se = mean_se([t[key] for t in per_trial])
        summary[key] = {"mean": mean, "se": se, "ci95": 1.96 * se, "n": len(per_trial)}
    trace = expected_trace(dim, d, draws, b2)
    edge = spectrum_edge(dim, d, draws, b2)
    return {
        "config": {
            "dim": dim,
            "d": d,
            "draws": draws,
            "trials": trials,
            "b2": b2,
            "seed": seed,
            "top_k": max(1, dim // 4),
            "workers": workers,
            "dtype": "float32 draws and products, float64 accumulation and eigvalsh",
        },  # fmt: skip
        "trials": per_trial,
        "summary": summary,
        "theory": {
            "expected_trace": trace,
            "lambda_edge": edge,
            "intrinsic_dim": trace / edge,
        },
        "wall_time_s": wall,
        "cpu_time_s": cpu,  # all threads; well below wall x workers on a shared machine
    }


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--d", type=int, nargs="+", default=[1, 64], help="columns per draw")
    parser.add_argument("--b2", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=OUT, help="record directory")
    args = parser.parse_args(argv)
    from launch.run_record import write_record  # jax only here: the math stays numpy

    written = []
    for d in args.d:
        rec = record(
            args.dim, d, args.draws, args.trials, args.b2, seed=args.seed, workers=args.workers
        )
        path = write_record(args.out / f"d{d}.json", rec)
        s = rec["summary"]["intrinsic_dim"]
        print(
            f"d={d}: intrinsic dimension {s['mean']:.2f} +- {s['ci95']:.2f} (1.96 SE, "
            f"{s['n']} trials; prediction {rec['theory']['intrinsic_dim']:.2f}); "
            f"{rec['wall_time_s']:.1f} s -> {path}"
        )
        written.append(path)
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
