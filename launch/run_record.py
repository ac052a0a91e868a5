"""The tidy record of a finished run (``results/records/<experiment>/<run>.json``).

One JSON per run: resolved config, curves (train and eval metrics by step, de-duplicated
after resumes, thinned to at most ``max_points``), final metrics, hardware and package
versions. ``make figures`` reads only these.
"""

import importlib.metadata
import platform
import subprocess
import time
from pathlib import Path

import jax

from launch.metrics_log import read_metrics
from results.atomic import write_json

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "jraph", "sketchy")


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
    }


def curves(run_dir: Path, max_points: int = 400) -> dict[str, list[list[float]]]:
    """``{metric: [[step, value], ...]}`` from ``metrics.jsonl``; the last write per step wins."""
    by_key: dict[str, dict[int, float]] = {}
    for row in read_metrics(run_dir):
        for k, v in row.items():
            if k != "step" and isinstance(v, int | float):
                by_key.setdefault(k, {})[row["step"]] = v
    out = {}
    for k, points in by_key.items():
        steps = sorted(points)
        stride = max(1, -(-len(steps) // max_points))
        keep = steps[::stride] + ([steps[-1]] if (len(steps) - 1) % stride else [])
        out[k] = [[s, points[s]] for s in keep]
    return out


def write_record(
    path: Path,
    *,
    config: dict,
    run_dir: Path,
    final: dict,
    wall_time_s: float,
    extra: dict | None = None,
) -> Path:
    record = {
        "config": config,
        "run_dir": str(run_dir),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_time_s": wall_time_s,
        "final": final,
        "curves": curves(run_dir),
        "hardware": hardware(),
        "versions": versions(),
        **(extra or {}),
    }
    return write_json(path, record)
