"""Reading run records and summarizing seeds (shared by the figure modules)."""

import json
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display


def load_records(records_dir: Path, experiment_prefix: str) -> dict[str, list[dict]]:
    """``{experiment: [record, ...]}`` for experiment dirs starting with the prefix."""
    out: dict[str, list[dict]] = {}
    for d in sorted(Path(records_dir).glob(f"{experiment_prefix}*")):
        recs = [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]
        if recs:
            out[d.name] = recs
    return out


def choice(record: dict, group: str) -> str:
    """The config-group option a run used (e.g. ``optimizer`` -> ``sketchy``)."""
    return (
        record["config"].get("choices", {}).get(group)
        or record["config"][group].get("_target_", "?").rsplit(".", 1)[-1]
    )


def mean_ci(values: list[float]) -> tuple[float, float, int]:
    """Mean and the paper's error bar, 1.96 x standard error (0 for a single seed)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0, n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n), n


def group_by(records: list[dict], *groups: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        out[
            tuple(choice(r, g) if g in ("optimizer", "workload") else _get(r, g) for g in groups)
        ].append(r)
    return dict(out)


def _get(record: dict, dotted: str):
    node = record["config"]
    for part in dotted.split("."):
        node = node[part]
    return node
