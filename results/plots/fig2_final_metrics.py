"""Paper Fig. 2: final test error of Adam / Shampoo / Sketchy, mean +- 1.96 SE over seeds.

Reads ``results/records/fig2_*``; writes ``tables/fig2.md`` (ours beside the paper's numbers
and the scale at which ours was obtained) and ``figures/fig2.png``.
"""

from pathlib import Path

import matplotlib.pyplot as plt

from results.atomic import save_figure, write_text
from results.plots.common import group_by, load_records, mean_ci

# (metric key in records, how it is turned into the paper's "error", label)
METRICS = {
    "ogbg_molpcba": ("test/mean_average_precision", lambda v: 1.0 - v, "1 - mAP (test)"),
    "imagenet": ("test/accuracy", lambda v: 1.0 - v, "top-1 error (ImageNet-v2)"),
    "librispeech": ("test/wer", lambda v: v, "WER (test-clean)"),
}
# What the paper prints. Fig. 2 is a bar chart whose bar heights are not given in the text;
# the only numbers printed are ImageNet-v1 *validation* accuracies (Sec. 5.1).
PAPER = {
    ("imagenet", "shampoo"): "v1 val acc 77.69% (SE 0.03)",
    ("imagenet", "sketchy"): "v1 val acc 77.18% (SE 0.04)",
    ("imagenet", "adam"): "v1 val acc 76.76% (SE 0.03)",
}
ORDER = ["adam", "shampoo", "sketchy"]


def make(records_dir: Path, out_dir: Path) -> list[Path]:
    experiments = load_records(records_dir, "fig2_")
    if not experiments:
        return []
    lines = [
        "# Fig. 2: final test error (mean +- 1.96 SE over seeds)",
        "",
        "| experiment (scale) | optimizer | ours | seeds | validation metric | paper |",
        "|---|---|---|---|---|---|",
    ]
    panels = []
    for exp, records in experiments.items():
        bars = []
        for (workload, opt), runs in sorted(
            group_by(records, "workload", "optimizer").items(),
            key=lambda kv: ORDER.index(kv[0][1]) if kv[0][1] in ORDER else 99,
        ):
            key, to_err, label = METRICS[workload]
            errs = [to_err(r["final"][key]) for r in runs if key in r["final"]]
            if not errs:
                continue
            m, ci, n = mean_ci(errs)
            val_key = key.replace("test/", "validation/")
            vals = [r["final"][val_key] for r in runs if val_key in r["final"]]
            vm, vci, _ = mean_ci(vals) if vals else (float("nan"), 0.0, 0)
            scale = _scale(runs[0])
            paper = PAPER.get((workload, opt), "bar chart only (no printed value)")
            lines.append(
                f"| {exp} ({scale}) | {opt} | {label} {m:.4f} +- {ci:.4f} | {n} | "
                f"{val_key.split('/')[1]} {vm:.4f} +- {vci:.4f} | {paper} |"
            )
            bars.append((opt, m, ci))
        panels.append((exp, label, bars))
    table = write_text(Path(out_dir) / "tables" / "fig2.md", "\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (exp, label, bars) in zip(axes[0], panels, strict=True):
        ax.bar(
            [b[0] for b in bars],
            [b[1] for b in bars],
            yerr=[b[2] for b in bars],
            capsize=4,
            color=["#888", "#36c", "#c63"][: len(bars)],
        )
        lo = min(b[1] - b[2] for b in bars)
        hi = max(b[1] + b[2] for b in bars)
        ax.set_ylim(lo - 0.5 * (hi - lo + 1e-3), hi + 0.5 * (hi - lo + 1e-3))
        ax.set_title(exp, fontsize=9)
        ax.set_ylabel(label)
    fig.tight_layout()
    figure = save_figure(fig, Path(out_dir) / "figures" / "fig2.png", dpi=120)
    plt.close(fig)
    return [table, figure]


def _scale(record: dict) -> str:
    c = record["config"]
    w = c["workload"]
    return (
        f"{w.get('data', '?')} data, {w.get('size', '?')} model, {c['trainer']['steps']} steps "
        f"x batch {c['trainer']['batch_size']}, {record['hardware']['device_count']} "
        f"{record['hardware']['platform']}"
    )
