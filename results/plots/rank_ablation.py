"""The rank ablation: Sketchy's final quality against its optimizer memory, rank by rank,
beside Shampoo and the subsampling control (Shampoo fed every ``update_freq``-th gradient),
and ``rank_auto`` (per-factor ranks under the memory of a uniform rank) as its own series.

Reads ``records/rank_ablation_*/`` and ``records/rank_auto_*/`` (``<variant>_seed<s>.json``:
``make reproduce``, or ``python launch/train.py sweep=ranks``); writes
``tables/rank_ablation.md`` and the memory-quality Pareto plot ``figures/rank_ablation.png``.
Memory is the second-moment state (statistics and preconditioners, not the graft or
momentum every variant shares) in 4-byte words per parameter, as logged by the trainer from
the optimizer state itself (the last value: a ``rank_auto`` run logs it again after the
switch from its warm-up rank).
"""

import re
from pathlib import Path

import matplotlib.pyplot as plt
from scipy.stats import spearmanr

from launch.atomic import save_figure, write_text
from results.plots.common import choice, load_records, mean_ci
from results.plots.fig2_quality import METRICS

PREFIXES = ("rank_ablation_", "rank_auto_")
PREFIX = PREFIXES[0]
COMMAND = "make reproduce (or python -m launch.reproduce --study rank_ablation_ogbg_molpcba_mini)"


def _load(records_dir: Path) -> dict[str, list[dict]]:
    return {k: v for p in PREFIXES for k, v in load_records(records_dir, p).items()}


def missing_records(records_dir: Path) -> list[str]:
    return [] if _load(records_dir) else [f"{PREFIX}*/*.json ({COMMAND})"]


def variant(record: dict) -> str:
    """``sketchy_rank16`` from the record's name (``sketchy_rank16_seed2``)."""
    name = record["config"].get("record_name") or ""
    return re.sub(r"_seed\d+$", "", name) or choice(record, "optimizer")


def second_moment_words(record: dict) -> float:
    c = record["curves"]
    words = 0.0
    for part in ("statistics", "preconditioners"):
        series = c.get(f"optimizer/bytes_per_param_{part}")
        words += series[-1][1] if series else 0.0
    return words


def _sort_key(name: str) -> tuple:
    m = re.search(r"rank(\d+)", name)
    return (0, int(m.group(1))) if m else (1, name)


def make(records_dir: Path, out_dir: Path) -> list[Path]:
    experiments = _load(records_dir)
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
    # One panel per workload: their metrics (1 - mAP, top-1 error) share no axis.
    workloads = sorted({choice(r[0], "workload") for r in experiments.values()})
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.5 * len(workloads), 3.8), squeeze=False)
    panel = dict(zip(workloads, axes[0], strict=True))
    rank_tables: list[str] = []  # after the main table: a table inside it would cut it
    for exp, records in experiments.items():
        ax = panel[choice(records[0], "workload")]
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
        _plot(ax, exp, xs, ys, es, names)
        rank_tables += _allocated_ranks(exp, groups)
        ax.set_ylabel(f"test {label}")
    for ax in panel.values():
        ax.set_xlabel("second-moment memory (words / parameter)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    lines += rank_tables
    out = [
        write_text(Path(out_dir) / "tables" / "rank_ablation.md", "\n".join(lines) + "\n"),
        save_figure(fig, Path(out_dir) / "figures" / "rank_ablation.png", dpi=120),
    ]
    plt.close(fig)
    return out


def _plot(ax, exp: str, xs, ys, es, names) -> None:
    """Sketchy by uniform rank and ``rank_auto`` by budget as lines; the rest as points."""
    series = {
        "Sketchy by rank": (r"sketchy_rank\d+", "o", "sketchy_rank", "k="),
        "rank_auto by budget": (r"sketchy_auto\d+", "^", "sketchy_auto", "auto "),
    }
    placed = set()
    for title, (pattern, marker, prefix, short) in series.items():
        idx = [i for i, n in enumerate(names) if re.fullmatch(pattern, n)]
        if not idx:
            continue
        ax.errorbar(
            [xs[i] for i in idx],
            [ys[i] for i in idx],
            yerr=[es[i] for i in idx],
            marker=marker,
            capsize=3,
            label=f"{exp}: {title}",
        )
        for i in idx:
            ax.annotate(names[i].replace(prefix, short), (xs[i], ys[i]), fontsize=7)
        placed |= set(idx)
    for i, n in enumerate(names):
        if i not in placed:
            ax.errorbar(xs[i], ys[i], yerr=es[i], marker="s", capsize=3, label=n)


def _allocated_ranks(exp: str, groups: dict[str, dict[int, dict]]) -> list[str]:
    """Per factor, the ranks ``rank_auto`` chose (the lowest seed's run of each budget) and,
    where the record has them, the factors' intrinsic dimensions at the switch with the
    rank correlation between the two."""
    chosen = {
        name: runs[min(runs)]["rank_auto"]
        for name, runs in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))
        if "rank_auto" in runs[min(runs)]
    }
    if not chosen:
        return []
    names = list(chosen)
    factors = sorted({f for c in chosen.values() for f in c["ranks"]})
    dims = next((c["intrinsic_dims"] for c in chosen.values() if "intrinsic_dims" in c), None)
    out = [
        "",
        f"Ranks chosen by `rank_auto` in {exp} (seed {min(groups[names[0]])}; budget = the",
        "sketch words of the uniform rank; captured share: the allocated directions' share of",
        "their factor's trace at the switch, mean over factors"
        + (
            "; intrinsic dimension: tr C / lambda_max of the factor's warm-up sketch at the\n"
            "switch, C = Gbar + tail I, mean over its blocks; the warm-up, hence C, is the same\n"
            "for every budget of a seed)."
            if dims
            else ")."
        ),
        "",
        "| factor | " + " | ".join(names) + (" | intrinsic dimension |" if dims else " |"),
        "|---|" + "---|" * (len(names) + bool(dims)),
    ]
    for f in factors:
        cells = [str(c["ranks"].get(f, "-")) for c in chosen.values()]
        cells += [f"{dims[f]:.1f}" if f in dims else "-"] if dims else []
        out.append(f"| `{f}` | " + " | ".join(cells) + " |")
    for key in ("budget_words", "used_words", "captured_share"):
        # The record's captured_share is the allocation's objective, summed over factors.
        values = [
            c[key] / len(c["ranks"]) if key == "captured_share" else c[key] for c in chosen.values()
        ]
        cells = [f"{v:,}" if isinstance(v, int) else f"{v:.3f}" for v in values]
        out.append(f"| {key} | " + " | ".join(cells) + (" | |" if dims else " |"))
    if dims:
        out.append(
            "| Spearman (rank, intrinsic dim.) | "
            + " | ".join(_spearman(c["ranks"], dims) for c in chosen.values())
            + " | |"
        )
    return out


def _spearman(ranks: dict, dims: dict) -> str:
    common = sorted(set(ranks) & set(dims))
    if len(common) < 3:
        return "-"
    rho = spearmanr([ranks[f] for f in common], [dims[f] for f in common]).statistic
    return f"{rho:.2f}"
