"""KrADagrad's synthetic ill-conditioned quadratic: loss curves and final losses.

Reads ``records/kradagrad_quadratic/*.json`` (written by ``launch/kradagrad_quadratic.py``);
writes ``figures/kradagrad_quadratic.png`` (loss vs step, absolute and relative to SGD) and
``tables/kradagrad_quadratic.md``. Only the largest problem size present is drawn; records
whose file name carries a variant tag (``<run>_n<size><tag>.json``) appear as extra rows
and dashed curves.
"""

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from results.atomic import save_figure, write_text  # noqa: E402

ORDER = ["sgd", "adam", "shampoo_f64", "shampoo_f32", "kradagrad_star_f32", "kradagrad_f32"]
LABEL = {
    "sgd": "SGD",
    "adam": "Adam",
    "shampoo_f64": "Shampoo (float64)",
    "shampoo_f32": "Shampoo (float32)",
    "kradagrad_star_f32": "KrADagrad* (float32)",
    "kradagrad_f32": "KrADagrad (float32)",
}
COLOR = {
    "sgd": "C7",
    "adam": "C1",
    "shampoo_f64": "k",
    "shampoo_f32": "C0",
    "kradagrad_star_f32": "C3",
    "kradagrad_f32": "C2",
}
NAME = re.compile(r"^(?P<run>.+)_n(?P<size>\d+)(?P<tag>.*)$")


def _load(records_dir: Path) -> list[dict]:
    out = []
    for path in sorted((Path(records_dir) / "kradagrad_quadratic").glob("*.json")):
        match = NAME.match(path.stem)
        if not match:
            continue
        record = json.loads(path.read_text())
        record["_tag"] = match["tag"]
        out.append(record)
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
    size = max(r["config"]["size"] for r in records)
    records = sorted((r for r in records if r["config"]["size"] == size), key=_sort_key)
    sgd = next((r for r in records if r["run"] == "sgd" and not r["_tag"]), None)
    cfg = records[0]["config"]
    scale = (
        f"{size} x {size} parameter matrix, condition 1e{cfg['log_cond']:g} per factor, "
        f"{cfg['steps']} steps"
    )

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

    rows = [
        "| run | dtype | learning rate | final loss | / SGD | failed steps | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lr = r["config"]["optimizer_kwargs"]["learning_rate"]
        rel = f"{r['final_loss'] / sgd['final_loss']:.3g}" if sgd else "n/a"
        final = "diverged" if r["diverged"] else f"{r['final_loss']:.4g}"
        rows.append(
            f"| {_label(r)} | {r['dtype']} | {lr:g} | {final} | {rel} | {r['failures']} "
            f"| {r['wall_time_s']:.0f} |"
        )
    hardware = records[0].get("hardware", {})
    text = "\n".join(
        [
            "# KrADagrad synthetic ill-conditioned quadratic",
            "",
            f"Ours: {scale}; {hardware.get('device', '?')} "
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
    table_path = write_text(Path(out_dir) / "tables" / "kradagrad_quadratic.md", text)
    return [fig_path, table_path]
