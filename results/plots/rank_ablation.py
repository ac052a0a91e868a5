"""The rank ablation: Sketchy's final quality against its optimizer memory, rank by rank,
beside Shampoo and the subsampling control (Shampoo fed every ``update_freq``-th gradient).

Reads ``records/rank_ablation_*/<variant>_seed<s>.json`` (``make reproduce``, or
``python launch/train.py sweep=ranks``); writes ``tables/rank_ablation.md`` and the
memory-quality Pareto plot ``figures/rank_ablation.png``. Memory is the second-moment state
(statistics and preconditioners, not the graft or momentum every variant shares) in 4-byte
words per parameter, as logged by the trainer from the optimizer state itself.
"""

import re
from pathlib import Path

import matplotlib.pyplot as plt

from launch.atomic import save_figure, write_text
from results.plots.common import choice, load_records, mean_ci
from results.plots.fig2_quality import METRICS

PREFIX = "rank_ablation_"
COMMAND = "make reproduce (or python -m launch.reproduce --study rank_ablation_ogbg_molpcba_mini)"


def missing_records(records_dir: Path) -> list[str]:
    return [] if load_records(records_dir, PREFIX) else [f"{PREFIX}*/*.json ({COMMAND})"]


def variant(record: dict) -> str:
    """``sketchy_rank16`` from the record's name (``sketchy_rank16_seed2``)."""
    name = record["config"].get("record_name") or ""
    return re.sub(r"_seed\d+$", "", name) or choice(record, "optimizer")


def second_moment_words(record: dict) -> float:
    c = record["curves"]
    words = 0.0
    for part in ("statistics", "preconditioners"):
        series = c.get(f"optimizer/bytes_per_param_{part}")
        words += series[0][1] if series else 0.0
    return words


def _sort_key(name: str) -> tuple:
    m = re.search(r"rank(\d+)", name)
    return (0, int(m.group(1))) if m else (1, name)


def make(records_dir: Path, out_dir: Path) -> list[Path]:
    experiments = load_records(records_dir, PREFIX)
    if not experiments:
        return []
    lines = [
        "# Rank ablation: quality against optimizer memory",
        "",
        "Mean +- 1.96 standard errors over distinct seeds; memory: second-moment state",
        "(statistics + preconditioners) in 4-byte words per parameter. `shampoo_subsampled`",
        "is Shampoo whose statistics see only every update_freq-th gradient, the gradients",
        "Sketchy's sketch sees: it separates the effect of sketching from that of subsampling.",
        "",
        "| experiment | variant | test error | validation | seeds | 2nd-moment words / param |",
        "|---|---|---|---|---|---|",
    ]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for exp, records in experiments.items():
        key, to_err, label = METRICS[choice(records[0], "workload")]
        groups: dict[str, dict[int, dict]] = {}
        for r in records:
            groups.setdefault(variant(r), {})[int(r["config"]["seed"])] = r
        xs, ys, es, names = [], [], [], []
        for name in sorted(groups, key=_sort_key):
            runs = list(groups[name].values())
            errs = [to_err(r["final"][key]) for r in runs if key in r["final"]]
            if not errs:
                continue
            objective = runs[0]["config"]["trainer"]["objective"]
            m, ci, n = mean_ci(errs)
            vm, vci, _ = mean_ci([r["final"][objective] for r in runs])
            words = second_moment_words(runs[0])
            lines.append(
                f"| {exp} | {name} | {label} {m:.4f} +- {ci:.4f} | "
                f"{objective.split('/')[1]} {vm:.4f} +- {vci:.4f} | {n} | {words:.3f} |"
            )
            xs.append(words), ys.append(m), es.append(ci), names.append(name)
        sketchy = [i for i, n in enumerate(names) if re.fullmatch(r"sketchy_rank\d+", n)]
        ax.errorbar(
            [xs[i] for i in sketchy],
            [ys[i] for i in sketchy],
            yerr=[es[i] for i in sketchy],
            marker="o",
            capsize=3,
            label=f"{exp}: Sketchy by rank",
        )
        for i in sketchy:
            ax.annotate(names[i].replace("sketchy_rank", "k="), (xs[i], ys[i]), fontsize=7)
        for i, n in enumerate(names):
            if i not in sketchy:
                ax.errorbar(xs[i], ys[i], yerr=es[i], marker="s", capsize=3, label=n)
        ax.set_ylabel(f"test {label}")
    ax.set_xlabel("second-moment memory (words / parameter)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = [
        write_text(Path(out_dir) / "tables" / "rank_ablation.md", "\n".join(lines) + "\n"),
        save_figure(fig, Path(out_dir) / "figures" / "rank_ablation.png", dpi=120),
    ]
    plt.close(fig)
    return out
