"""Paper Fig. 2: final test error of Adam / Shampoo / Sketchy (mean +- 1.96 SE over seeds),
time to target, the learning-rate tuning behind each bar, and training curves.

Reads ``records/fig2_<workload>[_mini]/`` (one record per optimizer and seed, made by
``make reproduce`` or the experiment's own sweep) and ``records/fig2_*_tuning/`` (one
record per optimizer and learning rate on the tuning seed); writes
``tables/fig2_quality.md`` and ``figures/fig2_quality.png``.

Time to target (AlgoPerf's measure): the first evaluation at which the validation metric
reaches the target, in steps and in training seconds (evaluation excluded). The target is
the record's own (``trainer.targets``, else the workload's AlgoPerf target at paper scale);
at mini scale, where AlgoPerf's numbers mean nothing, it is the level that *every* Adam seed
of the same experiment reaches within the budget (the worst Adam seed's final validation
metric), so it is set by a well-tuned Adam run and computed, not typed in.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from launch.atomic import save_figure, write_text
from launch.run_record import lower_is_better, time_to_target
from results.plots.common import choice, load_records, mean_ci

PREFIX = "fig2_"
COMMAND = "make reproduce (or python -m launch.reproduce --study fig2_<workload>_mini)"
# Test metric per workload and how it becomes the paper's "error".
METRICS = {
    "ogbg_molpcba": ("test/mean_average_precision", lambda v: 1.0 - v, "1 - mAP"),
    "imagenet": ("test/accuracy", lambda v: 1.0 - v, "top-1 error"),
    "librispeech": ("test/wer", lambda v: v, "WER"),
}
# What the paper prints. Fig. 2 is a bar chart whose bar heights are not given in the text;
# the only numbers printed are ImageNet-v1 *validation* accuracies (Sec. 5.1).
PAPER = {
    ("imagenet", "shampoo"): "v1 val acc 77.69% (SE 0.03)",
    ("imagenet", "sketchy"): "v1 val acc 77.18% (SE 0.04)",
    ("imagenet", "adam"): "v1 val acc 76.76% (SE 0.03)",
}
ORDER = ["adam", "shampoo", "sketchy"]
COLORS = {"adam": "#888", "shampoo": "#36c", "sketchy": "#c63"}


def missing_records(records_dir: Path) -> list[str]:
    """Fig. 2 needs at least one ``fig2_*`` experiment with final (non-tuning) records."""
    return [] if _experiments(records_dir) else [f"{PREFIX}*/*.json ({COMMAND})"]


def _experiments(records_dir: Path) -> dict[str, list[dict]]:
    return {k: v for k, v in load_records(records_dir, PREFIX).items() if not k.endswith("_tuning")}


def _by_optimizer(records: list[dict]) -> dict[str, dict[int, dict]]:
    """``{optimizer: {seed: record}}``; a seed recorded twice counts once (the last file)."""
    out: dict[str, dict[int, dict]] = {}
    for r in records:
        out.setdefault(choice(r, "optimizer"), {})[int(r["config"]["seed"])] = r
    return dict(sorted(out.items(), key=lambda kv: (ORDER + [kv[0]]).index(kv[0])))


def target_of(records: list[dict]) -> tuple[str, float, str] | None:
    """``(validation metric, target, where it comes from)`` for one experiment."""
    first = records[0]
    objective = first["config"]["trainer"]["objective"]
    own = dict(first["config"]["trainer"].get("targets") or {})
    if objective in own:
        return objective, float(own[objective]), "the experiment's config"
    if first["config"]["workload"].get("data") != "mini" and objective in first.get("targets", {}):
        return objective, float(first["targets"][objective]), "AlgoPerf"
    adam = [r["final"][objective] for r in records if choice(r, "optimizer") == "adam"]
    adam = [v for v in adam if np.isfinite(v)]
    if not adam:
        return None
    worst = max(adam) if lower_is_better(objective) else min(adam)
    return objective, float(worst), f"the worst final value of the {len(adam)} Adam seeds"


def _time_to_target(record: dict, metric: str, target: float) -> dict:
    c = record["curves"]
    seconds = [tuple(p) for p in c.get("perf/train_seconds", [])]
    return time_to_target(c.get(metric, []), seconds, target, metric)


def _tuning_rows(records_dir: Path, experiment: str) -> list[str]:
    tuning = load_records(records_dir, f"{experiment}_tuning").get(f"{experiment}_tuning", [])
    rows = []
    for opt, runs in _by_optimizer_lr(tuning).items():
        objective = runs[0]["config"]["trainer"]["objective"]
        scored = {}
        for r in runs:
            v = r["final"].get(objective, float("nan"))
            scored[float(r["config"]["optimizer"]["learning_rate"])] = v
        finite = {k: v for k, v in scored.items() if np.isfinite(v)}
        if not finite:
            continue
        pick = min if lower_is_better(objective) else max
        best = pick(finite, key=finite.get)
        grid = sorted(scored)
        edge = len(grid) > 1 and best in (grid[0], grid[-1])
        cells = "; ".join(
            (f"**{lr:g}: {v:.4f}**" if lr == best else f"{lr:g}: {v:.4f}")
            if np.isfinite(v)
            else f"{lr:g}: diverged"
            for lr, v in sorted(scored.items())
        )
        where = "ON AN EDGE of the grid" if edge else "inside the grid"
        rows.append(f"| {experiment} | {opt} | {objective} | {cells} | {best:g} ({where}) |")
    return rows


def _by_optimizer_lr(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(choice(r, "optimizer"), []).append(r)
    return dict(sorted(out.items(), key=lambda kv: (ORDER + [kv[0]]).index(kv[0])))


def make(records_dir: Path, out_dir: Path) -> list[Path]:
    experiments = _experiments(records_dir)
    if not experiments:
        return []
    lines, panels = _table_head(), []
    for exp, records in experiments.items():
        rows, panel = _experiment(exp, records)
        lines += rows
        panels.append(panel)
    lines += _tuning_section(records_dir, experiments)
    table = write_text(Path(out_dir) / "tables" / "fig2_quality.md", "\n".join(lines) + "\n")
    return [table, _figure(panels, out_dir)]


def _table_head() -> list[str]:
    """The title, how to read the table, and the main table's header."""
    return [
        "# Fig. 2: final test error, time to target, tuning",
        "",
        "Mean +- 1.96 standard errors over distinct seeds. Time to target: the first",
        "evaluation at which the validation metric reached the target (mean over the seeds that",
        "reached it), in steps and training seconds (evaluation excluded). Regenerate with",
        "`make figures`; the runs: `make reproduce`.",
        "",
        "| experiment (scale) | optimizer | learning rate | test error | seeds | validation "
        "| target | reached | steps to target | train s to target | paper |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]


def _experiment(exp: str, records: list[dict]) -> tuple[list[str], tuple]:
    """One experiment's table rows, one per optimizer, and its figure panel."""
    workload = choice(records[0], "workload")
    key, to_err, label = METRICS[workload]
    target = target_of(records)
    lines, bars, curves = [], [], []
    for opt, by_seed in _by_optimizer(records).items():
        runs = list(by_seed.values())
        errs = [to_err(r["final"][key]) for r in runs if key in r["final"]]
        if not errs:
            continue
        m, ci, n = mean_ci(errs)
        objective = runs[0]["config"]["trainer"]["objective"]
        vm, vci, _ = mean_ci([r["final"][objective] for r in runs])
        lrs = sorted({r["config"]["optimizer"]["learning_rate"] for r in runs})
        cells = _target_cells(runs, target)
        paper = PAPER.get((workload, opt), "bar chart only (no printed value)")
        lines.append(
            f"| {exp} ({_scale(runs[0])}) | {opt} | {', '.join(f'{v:g}' for v in lrs)} "
            f"| {label} {m:.4f} +- {ci:.4f} | {n} | {objective.split('/')[1]} "
            f"{vm:.4f} +- {vci:.4f} | {' | '.join(cells)} | {paper} |"
        )
        bars.append((opt, m, ci))
        curves.append((opt, objective, _mean_curve(runs, objective)))
    if target is not None:
        lines.append(f"| {exp}: target from {target[2]} | | | | | | | | | | |")
    return lines, (exp, label, bars, curves)


def _target_cells(runs: list[dict], target: tuple[str, float, str] | None) -> list[str]:
    """The target, the seeds that reached it, and their mean steps and train seconds to it."""
    if target is None:
        return ["-", "-", "-", "-"]
    metric, value, _ = target
    hits = [_time_to_target(r, metric, value) for r in runs]
    hits = [h for h in hits if h["step"] is not None]
    cells = [f"{metric.split('/')[1]} {value:.4f}", f"{len(hits)}/{len(runs)}"]
    if hits:
        return cells + [
            f"{np.mean([h['step'] for h in hits]):.0f}",
            f"{np.mean([h['train_seconds'] for h in hits]):.0f}",
        ]
    return cells + ["never", "never"]


def _tuning_section(records_dir: Path, experiments: dict[str, list[dict]]) -> list[str]:
    """The learning-rate tuning table of every experiment that has tuning records."""
    tuning = [row for exp in experiments for row in _tuning_rows(records_dir, exp)]
    if not tuning:
        return []
    return [
        "",
        "## Learning-rate tuning (tuning seed; best in bold)",
        "",
        "| experiment | optimizer | selected on | learning rate: final validation metric "
        "| selected |",
        "|---|---|---|---|---|",
        *tuning,
    ]


def _figure(panels: list[tuple], out_dir: Path) -> Path:
    """Per experiment: the test-error bars (top) and the mean validation curves (bottom)."""
    fig, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels), 6.4), squeeze=False)
    for col, (exp, label, bars, curves) in enumerate(panels):
        ax = axes[0][col]
        ax.bar(
            [b[0] for b in bars],
            [b[1] for b in bars],
            yerr=[b[2] for b in bars],
            capsize=4,
            color=[COLORS.get(b[0], "#5a5") for b in bars],
        )
        lo = min(b[1] - b[2] for b in bars)
        hi = max(b[1] + b[2] for b in bars)
        ax.set_ylim(lo - 0.5 * (hi - lo + 1e-3), hi + 0.5 * (hi - lo + 1e-3))
        ax.set_title(exp, fontsize=9)
        ax.set_ylabel(f"test {label}")
        ax = axes[1][col]
        for opt, objective, (steps, values) in curves:
            ax.plot(steps, values, marker=".", color=COLORS.get(opt, "#5a5"), label=opt)
            ax.set_ylabel(objective)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    figure = save_figure(fig, Path(out_dir) / "figures" / "fig2_quality.png", dpi=120)
    plt.close(fig)
    return figure


def _mean_curve(runs: list[dict], metric: str) -> tuple[list[int], list[float]]:
    """The validation curve averaged over seeds, at the steps every seed evaluated."""
    per_run = [dict((int(s), v) for s, v in r["curves"].get(metric, [])) for r in runs]
    steps = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    return steps, [float(np.mean([p[s] for p in per_run])) for s in steps]


def _scale(record: dict) -> str:
    c = record["config"]
    w = c["workload"]
    return (
        f"{w.get('data', '?')} data, {w.get('size', '?')} model, {c['trainer']['steps']} steps "
        f"x batch {c['trainer']['batch_size']}, {record['hardware']['device_count']} "
        f"{record['hardware']['platform']}"
    )
