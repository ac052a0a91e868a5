"""KrADagrad's synthetic ill-conditioned quadratic: loss curves and final losses.

Reads ``records/kradagrad_quadratic/*.json`` (trainer records of
``python launch/train.py experiment=kradagrad_quadratic``); writes
``figures/kradagrad_quadratic.png`` (loss vs step, absolute and relative to SGD) and
``tables/kradagrad_quadratic.md``. A run is its optimizer and parameter dtype; its loss curve
is ``train/loss`` (the loss before each step) followed by ``validation/loss`` (after the
last). Only the largest problem size present is drawn; records whose file name carries a
variant tag (``<optimizer>_<dtype>_n<size><tag>.json``) appear as extra rows and dashed curves.
"""

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from launch.atomic import save_figure, write_text  # noqa: E402
from results.plots.common import choice  # noqa: E402

# Runs are keyed "<optimizer>_<dtype>" (the config's optimizer choice and workload.dtype).
ORDER = [
    "sgd_float32",
    "adam_float32",
    "shampoo_float64",
    "shampoo_float32",
    "kradagrad_star_float32",
    "kradagrad_float32",
]
LABEL = {
    "sgd_float32": "SGD",
    "adam_float32": "Adam",
    "shampoo_float64": "Shampoo (float64)",
    "shampoo_float32": "Shampoo (float32)",
    "kradagrad_star_float32": "KrADagrad* (float32)",
    "kradagrad_float32": "KrADagrad (float32)",
}
COLOR = {
    "sgd_float32": "C7",
    "adam_float32": "C1",
    "shampoo_float64": "k",
    "shampoo_float32": "C0",
    "kradagrad_star_float32": "C3",
    "kradagrad_float32": "C2",
}
NAME = re.compile(r"^(?P<run>.+)_n(?P<size>\d+)(?P<tag>.*)$")


def _run(record: dict, tag: str) -> dict:
    """The fields the figure and table use, from a trainer record."""
    config, curves = record["config"], record["curves"]
    failures = curves.get("optimizer/decomposition_failures") or [[0, 0]]
    return {
        "run": f"{choice(record, 'optimizer')}_{config['workload']['dtype']}",
        "_tag": tag,
        "dtype": config["workload"]["dtype"],
        "size": config["workload"]["size"],
        "log_cond": config["workload"]["log_cond"],
        "steps": config["trainer"]["steps"],
        "learning_rate": config["optimizer"]["learning_rate"],
        "loss": [v for _, v in curves["train/loss"]] + [record["final"]["validation/loss"]],
        "final_loss": record["final"]["validation/loss"],
        "failures": int(failures[-1][1]),
        "wall_time_s": record["wall_time_s"],
        "hardware": record.get("hardware", {}),
    }


def _load(records_dir: Path) -> list[dict]:
    out = []
    for path in sorted((Path(records_dir) / "kradagrad_quadratic").glob("*.json")):
        match = NAME.match(path.stem)
        if match:
            out.append(_run(json.loads(path.read_text()), match["tag"]))
    return out


def _sort_key(r: dict):
    run = r["run"]
    return (ORDER.index(run) if run in ORDER else len(ORDER), r["_tag"])


def _label(r: dict) -> str:
    return LABEL.get(r["run"], r["run"]) + (f" {r['_tag'].strip('_')}" if r["_tag"] else "")


def make(records_dir: Path, out_dir: Path) -> list[Path]:
    records = _load(records_dir)
    if not records:
        return []
    size = max(r["size"] for r in records)
    records = sorted((r for r in records if r["size"] == size), key=_sort_key)
    sgd = next((r for r in records if r["run"] == "sgd_float32" and not r["_tag"]), None)
    first = records[0]
    scale = (
        f"{size} x {size} parameter matrix, condition 1e{first['log_cond']:g} per factor, "
        f"{first['steps']} steps"
    )
    return [_figure(records, sgd, scale, out_dir), _table(records, sgd, scale, out_dir)]


def _figure(records: list[dict], sgd: dict | None, scale: str, out_dir: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in records:
        loss = np.asarray(r["loss"], float)
        style = dict(color=COLOR.get(r["run"]), ls="--" if r["_tag"] else "-", lw=1.4)
        axes[0].semilogy(loss, label=_label(r), **style)
        if sgd is not None:
            n = min(len(loss), len(sgd["loss"]))
            axes[1].semilogy(loss[:n] / np.asarray(sgd["loss"][:n], float), **style)
    # A diverged run would squash the others: cap the axes a little above the start.
    start = max(r["loss"][0] for r in records)
    axes[0].set_ylim(top=100 * start)
    axes[1].set_ylim(top=1e3)
    axes[0].set(xlabel="step", ylabel="loss  tr(W^T H0 W H1)", title="loss")
    axes[1].set(xlabel="step", ylabel="loss / SGD's loss", title="relative to SGD")
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"KrADagrad synthetic ill-conditioned quadratic ({scale})", fontsize=10)
    fig.tight_layout()
    fig_path = save_figure(fig, Path(out_dir) / "figures" / "kradagrad_quadratic.png", dpi=120)
    plt.close(fig)
    return fig_path


def _table(records: list[dict], sgd: dict | None, scale: str, out_dir: Path) -> Path:
    rows = [
        "| run | dtype | learning rate | final loss | / SGD | failed steps | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lr = r["learning_rate"]
        rel = f"{r['final_loss'] / sgd['final_loss']:.3g}" if sgd else "n/a"
        # A diverging run stops (non-finite policy, exit 3) and leaves no record.
        final = f"{r['final_loss']:.4g}"
        rows.append(
            f"| {_label(r)} | {r['dtype']} | {lr:g} | {final} | {rel} | {r['failures']} "
            f"| {r['wall_time_s']:.0f} |"
        )
    hardware = records[0]["hardware"]
    text = "\n".join(
        [
            "# KrADagrad synthetic ill-conditioned quadratic",
            "",
            f"Ours: {scale}; {hardware.get('device_kind', '?')} "
            f"({hardware.get('cpu_count', '?')} cores), generated from `results/records` "
            "by `results/plots/kradagrad_quadratic.py`.",
            "Paper: the KrADagrad paper's numbers are not available to us; its code repository "
            "only plots this experiment (`experiments/quadratic_high_condition.ipynb`: "
            "KrADagrad* and KrADagrad in float32 better than Shampoo in float32). No numeric "
            "value to compare.",
            "",
            *rows,
            "",
        ]
    )
    return write_text(Path(out_dir) / "tables" / "kradagrad_quadratic.md", text)
