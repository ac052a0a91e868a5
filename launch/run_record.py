"""The tidy record of a finished run (``results/records/<experiment>/<run>.json``).

:func:`write_record` is the one writer of every record (trainer runs, online convex
optimization, the Fig. 1 and Fig. 3 analyses): the run's own fields plus the same
``finished_at``, ``hardware`` and ``versions``. A trainer run's fields
(:func:`trainer_record`): resolved config, curves (train and eval metrics by step,
de-duplicated after resumes, thinned to at most ``max_points``), final metrics, training
time and time to target. ``make figures`` reads only these.
"""

import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

from launch.atomic import write_json
from launch.metrics_log import read_metrics

# Reported when installed (the online-convex runs read their data with scikit-learn/mlxtend).
PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "jraph",
    "sketchy",
    "scikit-learn",
    "mlxtend",
    "scipy",
    "hydra-core",
)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except OSError:
        pass
    return out


def hardware() -> dict:
    d = jax.devices()[0]
    return {
        "platform": d.platform,
        "device_kind": d.device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def write_record(path: Path, record: dict) -> Path:
    """Write ``record`` atomically as JSON, stamped with when, where and with what it ran."""
    stamp = {
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hardware": hardware(),
        "versions": versions(),
    }
    return write_json(path, {**record, **stamp})


def curves(run_dir: Path, max_points: int = 400) -> dict[str, list[list[float]]]:
    """``{metric: [[step, value], ...]}`` from ``metrics.jsonl``; the last write per step wins."""
    by_key: dict[str, dict[int, float]] = {}
    for row in read_metrics(run_dir):
        for k, v in row.items():
            if k != "step" and isinstance(v, int | float):
                by_key.setdefault(k, {})[row["step"]] = v
    return {k: _thin([[s, v[s]] for s in sorted(v)], max_points) for k, v in by_key.items()}


def _thin(points: list[list[float]], max_points: int) -> list[list[float]]:
    """Every ``stride``-th point and the last: at most about ``max_points``."""
    stride = max(1, -(-len(points) // max_points))
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


# Metrics where smaller is better (the rest, accuracy and mAP, are maximized).
LOWER_IS_BETTER = ("loss", "error", "wer")


def lower_is_better(metric: str) -> bool:
    """``validation/wer`` -> True, ``validation/accuracy`` -> False."""
    return metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER


def train_seconds(run_dir: Path) -> list[tuple[int, float]]:
    """Cumulative training seconds at each logged step: ``[(step, seconds), ...]``.

    Each training row carries ``perf/step_time_s``, the mean step time since the previous
    row, measured after compilation and excluding evaluation (checkpoint writes and spectra
    included); the sum over rows of ``step_time * steps`` is the training time. A resumed
    run re-logs the steps it redoes; the last write per step wins, as in :func:`curves`.
    """
    by_step = {
        row["step"]: row["perf/step_time_s"]
        for row in read_metrics(run_dir)
        if isinstance(row.get("perf/step_time_s"), int | float)
    }
    out, prev, total = [], 0, 0.0
    for step in sorted(by_step):
        total += by_step[step] * (step - prev)
        out.append((step, total))
        prev = step
    return out


def time_to_target(
    evals: list[list[float]], seconds: list[tuple[int, float]], target: float, metric: str
) -> dict:
    """First evaluation step at which ``metric`` reached ``target`` and the training seconds
    spent by then (``None`` for both when it never did)."""
    lower = lower_is_better(metric)
    for step, value in evals:
        if (value <= target) if lower else (value >= target):
            # Linear between logged steps (a record's curves may be thinned).
            xs, ts = [s for s, _ in seconds], [t for _, t in seconds]
            spent = float(np.interp(step, xs, ts)) if seconds else 0.0
            return {"target": target, "step": int(step), "train_seconds": spent}
    return {"target": target, "step": None, "train_seconds": None}


def trainer_record(
    *, config: dict, run_dir: Path, final: dict, wall_time_s: float, extra: dict | None = None
) -> dict:
    """The fields of a trainer run's record (for :func:`write_record`)."""
    extra = dict(extra or {})
    # The run's own targets (a mini workload's, set from a tuned Adam run) or else the
    # workload's paper-scale ones (AlgoPerf's); only validation metrics decide a target.
    targets = dict(config.get("trainer", {}).get("targets") or extra.get("targets") or {})
    run_curves = curves(run_dir)
    seconds = train_seconds(run_dir)
    if seconds:
        run_curves["perf/train_seconds"] = _thin([[s, t] for s, t in seconds], 400)
    return {
        "config": config,
        "run_dir": str(run_dir),
        "wall_time_s": wall_time_s,
        "final": final,
        "curves": run_curves,
        "train_seconds": seconds[-1][1] if seconds else 0.0,
        "time_to_target": {
            metric: time_to_target(run_curves.get(metric, []), seconds, value, metric)
            for metric, value in sorted(targets.items())
            if metric.startswith("validation/")
        },
        **extra,
    }
