"""Metrics sinks: a local JSON-lines file first (the source of truth), then W&B.

W&B runs ``offline`` by default (no account or network needed; ``wandb sync`` later),
``disabled`` in tests; its run id is kept in the run directory so a resumed run continues
the same W&B run.
"""

import json
import math
import os
import uuid
from pathlib import Path

import numpy as np


def _plain(v):
    """JSON-safe scalar (NaN/Inf become strings, which JSON lacks)."""
    v = float(np.asarray(v)) if not isinstance(v, str | bool | int) else v
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLog:
    """Append-only ``metrics.jsonl`` (one ``{"step": s, **metrics}`` per line) + W&B."""

    def __init__(
        self,
        run_dir: Path,
        *,
        wandb_mode: str,
        project: str,
        run_name: str,
        config: dict,
        tags: list[str],
        is_main_process: bool = True,
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = is_main_process
        self._wandb = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - kept open for the run
        if wandb_mode != "disabled":
            import wandb

            id_file = Path(run_dir) / "wandb_run_id"
            run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
            id_file.write_text(run_id)
            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb = wandb.init(
                project=project,
                name=run_name,
                id=run_id,
                resume="allow",
                dir=str(run_dir),
                config=config,
                tags=tags,
                mode=wandb_mode,
            )

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled or not metrics:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=int(step))

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
