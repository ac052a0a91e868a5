"""Paper Fig. 1: optimizer-state memory of Adam, Shampoo and Sketchy on the full-size models.

Reads ``records/fig1_memory/<model>.json`` (written by ``python -m launch.memory_report``);
writes ``tables/fig1_memory.md`` (words per parameter by category, measured beside the
paper's formulas, and the paper's "4x at block 1024 / rank 256" checked) and
``figures/fig1_memory.png`` (stacked words per parameter, the formulas' second moment
marked).
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402

from launch.atomic import save_figure, write_text  # noqa: E402

EXPERIMENT = "fig1_memory"
COMMAND = "python -m launch.memory_report"
MODELS = ("resnet50", "conformer", "gnn")
MODEL_LABEL = {"resnet50": "ResNet-50", "conformer": "Conformer", "gnn": "GNN"}
OPTIMIZERS = ("adam", "shampoo", "sketchy")
OPT_LABEL = {"adam": "Adam", "shampoo": "Shampoo", "sketchy": "Sketchy"}
CATEGORIES = ("statistics", "preconditioners", "grafting", "momentum", "other")
COLOR = {
    "statistics": "C0",
    "preconditioners": "C3",
    "grafting": "C2",
    "momentum": "C7",
    "other": "k",
}
MIB = 2**20


def missing_records(records_dir: Path) -> list[str]:
    """The records this artifact needs that are absent, each with the command that makes it."""
    d = Path(records_dir) / EXPERIMENT
    return [
        f"{EXPERIMENT}/{m}.json ({COMMAND} --models {m})"
        for m in MODELS
        if not (d / f"{m}.json").exists()
    ]


def _load(records_dir: Path) -> list[dict]:
    records = [
        json.loads(p.read_text()) for p in sorted((Path(records_dir) / EXPERIMENT).glob("*.json"))
    ]
    order = {m: i for i, m in enumerate(MODELS)}
    return sorted(records, key=lambda r: (order.get(r["model"], len(order)), r["model"]))


def _label(r: dict) -> str:
    return MODEL_LABEL.get(r["model"], r["model"])


def _shape(shape) -> str:
    return " x ".join(str(d) for d in shape)


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _table(records: list[dict]) -> str:
    """The Markdown table file: its sections in order."""
    lines = [
        *_introduction(records),
        *_words_per_param(records),
        *_check_4x(records),
        *_reading(records),
        *_model_sizes(records),
    ]
    return "\n".join(lines) + "\n"


def _introduction(records: list[dict]) -> list[str]:
    """The title, what we measured and what the paper states."""
    cfg = records[0]["config"]
    rank, block = cfg["rank"], cfg["block_size"]
    models = "; ".join(f"{_label(r)} ({r['description']}): {r['num_params']:,}" for r in records)
    return [
        "# Fig. 1: optimizer-state memory",
        "",
        "Ours: exact float32 optimizer states of the full-size paper models, computed with "
        "`jax.eval_shape` (no training, no device memory): "
        f"{models} parameters. Adam is `optax.adamw`; Shampoo and Sketchy are this "
        f"library's at block size {block}, Sketchy at rank {rank}, both with their default "
        "RMSProp grafting (one word per parameter) and momentum (one word per parameter). "
        "A word is 4 bytes. Generated from `results/records/fig1_memory` by "
        f"`results/plots/fig1_memory.py`; the records by `{COMMAND}` (seconds, CPU).",
        "",
        "Paper: Fig. 1 gives second-moment memory for one m x n matrix: Adam O(mn), Shampoo "
        "O(m^2 + n^2) (plus as many numbers for its inverse roots in practice), S-Shampoo "
        "O(k(m + n)); and one number: at block size 1024 and rank 256 the sketch is 4x "
        "smaller than Shampoo's statistic. 'Paper formula' below evaluates those counts "
        "(`sketchy.memory.adam_floats / shampoo_floats / sketchy_floats`, blocked at "
        f"{block}) on each model's matrices (tensors with two or more non-unit dims, as "
        "fan-in x fan-out).",
    ]


def _words_per_param(records: list[dict]) -> list[str]:
    """Words per parameter by category, one row per model and optimizer."""
    lines = [
        "",
        "## Words per parameter, by category",
        "",
        "| model | optimizer | statistics | preconditioners | grafting | momentum | other "
        "| total | total MiB | 2nd moment: ours | 2nd moment: paper formula |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        for name in OPTIMIZERS:
            o = r["optimizers"][name]
            w = o["words_per_param"]
            formula = r["paper_formula"][name]["second_moment_words_per_param"]
            lines.append(
                f"| {_label(r)} | {OPT_LABEL[name]} | "
                + " | ".join(f"{w[c]:.3f}" for c in CATEGORIES)
                + f" | **{w['total']:.3f}** | {o['bytes']['total'] / MIB:,.1f} "
                f"| {o['second_moment_words_per_param']:.3f} | {formula:.3f} |"
            )
    return lines


def _check_4x(records: list[dict]) -> list[str]:
    """The paper's 4x: one full block, then each whole model, measured and by formula."""
    cfg = records[0]["config"]
    rank, block = cfg["rank"], cfg["block_size"]
    one = records[0]["check_4x"]["one_block"]
    lines = [
        "",
        f"## The paper's 4x (block {block}, rank {rank})",
        "",
        "Shampoo's second-moment memory over Sketchy's: the statistics alone (the paper's "
        "comparison), and with Shampoo's cached inverse roots, which Sketchy does not store "
        "(it applies its inverse root from the sketch).",
        "",
        "| scope | Shampoo statistics / Sketchy's | Shampoo statistics + roots / Sketchy's |",
        "|---|---|---|",
        f"| one full {block} x {block} block ({one['shampoo_statistics_floats']:,} vs "
        f"{one['sketchy_statistics_floats']:,} floats) | **{one['statistics_ratio']:.2f}x** "
        f"| {one['with_roots_ratio']:.2f}x |",
    ]
    for r in records:
        c = r["check_4x"]
        for key, what in (("model_measured", "measured"), ("model_paper_formula", "paper formula")):
            lines.append(
                f"| {_label(r)}, whole model, {what} | {_x(c[key]['statistics_ratio'])} "
                f"| {_x(c[key]['with_roots_ratio'])} |"
            )
    return lines


def _reading(records: list[dict]) -> list[str]:
    """Why a whole model saves less than a full block, and each model's tensors that differ."""
    cfg = records[0]["config"]
    rank, block = cfg["rank"], cfg["block_size"]
    one = records[0]["check_4x"]["one_block"]
    lines = [
        "",
        f"Reading. The 4x holds for a full block ({one['statistics_ratio']:.2f}x, "
        f"{one['with_roots_ratio']:.2f}x with the roots). Over a whole model it is smaller "
        "because many factors are shorter than the block: an axis of size "
        f"d <= {rank} is kept whole by the sketch (k = d), which saves nothing there, and an "
        f"axis of size {rank} < d < {block} saves d / {rank}. 'Measured' differs from "
        "'paper formula' where this library's blocks differ from the fan-in x fan-out view "
        "(listed below): small dims are merged only up to the block size, so some kernels "
        "are tensors with one factor per dim rather than matrices, and tensors with a dim "
        f"above {cfg['max_precond_dim']} are graft-only. The measured statistics and "
        "preconditioner bytes equal the same per-axis counts on this library's own blocks "
        "exactly (`block_formula` in the records; `launch/memory_report.py` checks it).",
        "",
    ]
    for r in records:
        multi = r.get("tensors_with_more_than_two_factors", [])
        graft = r.get("graft_only_matrices", [])
        if multi:
            shown = ", ".join(f"{_shape(s)} as {_shape(m)}" for s, m in multi)
            lines.append(f"- {_label(r)}: preconditioned as 3+ factors: {shown}.")
        if graft:
            lines.append(f"- {_label(r)}: graft-only matrices: {', '.join(map(_shape, graft))}.")
    return lines


def _model_sizes(records: list[dict]) -> list[str]:
    """Each model's parameters, tensors and matrices, and how many are Kronecker-preconditioned."""
    lines = [
        "",
        "| model | parameters | tensors | matrices | parameters in matrices "
        "| Kronecker-preconditioned parameters |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {_label(r)} | {r['num_params']:,} | {r['num_tensors']} | {r['num_matrices']} "
            f"| {r['params_in_matrices']:,} | {r['params_kronecker_preconditioned']:,} |"
        )
    return lines


def _figure(records: list[dict], out_dir: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4.4))
    width, ticks, labels, top = 0.27, [], [], 0.0
    for i, r in enumerate(records):
        for j, name in enumerate(OPTIMIZERS):
            x = i + (j - 1) * (width + 0.03)
            w = r["optimizers"][name]["words_per_param"]
            bottom = 0.0
            for c in CATEGORIES:
                ax.bar(x, w[c], width, bottom=bottom, color=COLOR[c])
                bottom += w[c]
            formula = r["paper_formula"][name]["second_moment_words_per_param"]
            ax.annotate(f"{w['total']:.2f}", (x, max(bottom, formula)), ha="center",
                        va="bottom", fontsize=7)  # fmt: skip
            ax.plot([x - width / 2, x + width / 2], [formula] * 2, color="k", lw=1.5, ls=":")
            ticks.append(x)
            labels.append(OPT_LABEL[name])
            top = max(top, bottom, formula)
        ax.text(i, -0.13, f"{_label(r)} ({r['num_params'] / 1e6:.1f}M parameters)",
                ha="center", va="top", transform=ax.get_xaxis_transform())  # fmt: skip
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOR[c]) for c in CATEGORIES]
    handles.append(plt.Line2D([], [], color="k", lw=1.5, ls=":"))
    ax.legend(handles, [*CATEGORIES, "2nd moment, paper formula"], fontsize=7,
              loc="upper left")  # fmt: skip
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1.12 * top)
    ax.set_ylabel("optimizer state, words per parameter")
    cfg = records[0]["config"]
    ax.set_title(
        "Optimizer-state memory of the full-size models (jax.eval_shape, float32; "
        f"block {cfg['block_size']}, Sketchy rank {cfg['rank']})",
        fontsize=9,
    )
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path = save_figure(fig, Path(out_dir) / "figures" / "fig1_memory.png", dpi=120)
    plt.close(fig)
    return path


def make(records_dir: Path, out_dir: Path) -> list[Path]:
    records = _load(records_dir)
    if not records:
        return []
    table = write_text(Path(out_dir) / "tables" / "fig1_memory.md", _table(records))
    return [_figure(records, out_dir), table]
