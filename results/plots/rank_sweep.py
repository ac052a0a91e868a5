"""Sketchy's rank sweep: final validation metric and second-moment memory vs rank."""

from pathlib import Path

import matplotlib.pyplot as plt

from results.atomic import save_figure, write_text
from results.plots.common import group_by, load_records, mean_ci


def make(records_dir: Path, out_dir: Path) -> list[Path]:
    experiments = load_records(records_dir, "rank_sweep")
    if not experiments:
        return []
    lines = [
        "# Sketchy rank sweep",
        "",
        "| experiment | rank | objective (mean +- 1.96 SE) | seeds | 2nd-moment bytes/param/4 |",
        "|---|---|---|---|---|",
    ]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for exp, records in experiments.items():
        xs, ys, es = [], [], []
        for (rank,), runs in sorted(group_by(records, "rank").items()):
            objective = runs[0]["config"]["trainer"]["objective"]
            vals = [r["final"][objective] for r in runs if objective in r["final"]]
            if not vals:
                continue
            m, ci, n = mean_ci(vals)
            mem = runs[0]["curves"].get("optimizer/bytes_per_param_statistics", [[0, float("nan")]])
            lines.append(
                f"| {exp} | {rank} | {objective} {m:.4f} +- {ci:.4f} | {n} | {mem[0][1]:.3f} |"
            )
            xs.append(rank), ys.append(m), es.append(ci)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=exp)
        ax.set_ylabel(objective)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = [
        write_text(Path(out_dir) / "tables" / "rank_sweep.md", "\n".join(lines) + "\n"),
        save_figure(fig, Path(out_dir) / "figures" / "rank_sweep.png", dpi=120),
    ]
    plt.close(fig)
    return out
