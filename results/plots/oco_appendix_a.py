"""Paper Appendix A (online logistic regression) and Observation 2 (regret exponents).

Reads ``records/oco/*.json`` (written by ``launch/oco.py``); writes
``figures/oco_appendix_a_rank<k>.png`` (one column per dataset; rows: cumulative average log
loss and 0-1 loss vs examples; the sketched methods at rank ``k``, the unsketched ones in
every figure), ``figures/oco_observation2.png`` (tuned regret vs ``T``, log-log) and
``tables/oco_appendix_a.md``.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402

from results.atomic import save_figure, write_text  # noqa: E402

ORDER = ["s_adagrad", "full_adagrad", "ada_fd", "fd_son", "rfd_son", "diag_adagrad", "ogd"]
LABEL = {
    "s_adagrad": "S-AdaGrad",
    "full_adagrad": "full-matrix AdaGrad",
    "ada_fd": "Ada-FD",
    "fd_son": "FD-SON",
    "rfd_son": "RFD-SON",
    "diag_adagrad": "diag AdaGrad",
    "ogd": "OGD",
}
STYLE = {
    "s_adagrad": ("C3", "-"),
    "full_adagrad": ("k", "--"),
    "ada_fd": ("C0", "-"),
    "fd_son": ("C2", "-"),
    "rfd_son": ("C4", "-"),
    "diag_adagrad": ("C1", ":"),
    "ogd": ("C7", ":"),
}


READING = (
    "Reading: the ordering the paper predicts holds (fixed-delta Ada-FD grows faster than "
    "S-AdaGrad, which tracks full-matrix AdaGrad), but both measured exponents are lower than "
    "the theory's. S-AdaGrad's O(T^1/2) is a worst case; here the gradients have a non-zero mean "
    "and the ball is curved, which lets 1/sqrt(t)-type steps do better. [inference] For Ada-FD, "
    "letting delta grow with lr/delta fixed turns it into constant-step OGD, whose tuned regret "
    "is O(T^1/2) on any instance, so with delta tuned per T (the `wide` grid) its exponent is "
    "about 0.5; the Omega(T^3/4) of Observation 2 must rest on a restriction we cannot check "
    "(the paper's appendix is not available to us). The Appendix A grid caps lr and delta at 1, "
    "which keeps Ada-FD above 0.5."
)


def _load(records_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(records_dir) / "oco").glob("*.json"))]


def _key(alg: str) -> int:
    return ORDER.index(alg) if alg in ORDER else len(ORDER)


def _sketch(rec: dict) -> str:
    return "-" if rec["rank"] is None else f"{rec['sketch_size']} ({rec['rank']})"


def _edge(rec: dict) -> str:
    """A mark when a tuned hyperparameter sits on the edge of its grid."""
    marks = []
    for name, value in rec["best_hparams"].items():
        grid = [v for v in rec["grid"][name] if v is not None]
        if value in (min(grid), max(grid)) and len(set(grid)) > 1:
            marks.append(name)
    return "*" if marks else ""


def _zoom(ax, curves: list[dict], metric: str) -> None:
    """Linear axes (as the reference plots); y from the best final value to the worst value
    after the first 10% of the pass, so that the early transient does not hide the ranking."""
    late = [
        v
        for c in curves
        for n, v in zip(c["examples"], c[metric], strict=True)
        if v is not None and n >= 0.1 * c["examples"][-1]
    ]
    if late:
        lo, hi = min(late), max(late)
        pad = 0.05 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
    ax.grid(alpha=0.3)


def _curve_figures(recs: list[dict], out_dir: Path) -> list[Path]:
    datasets = sorted({r["dataset"] for r in recs})
    ranks = sorted({r["rank"] for r in recs if r["rank"] is not None})
    out = []
    for rank in ranks or [None]:
        fig, axes = plt.subplots(2, len(datasets), figsize=(4.2 * len(datasets), 6), squeeze=False)
        for col, ds in enumerate(datasets):
            runs = [r for r in recs if r["dataset"] == ds and r["rank"] in (None, rank)]
            for r in sorted(runs, key=lambda r: _key(r["algorithm"])):
                color, ls = STYLE.get(r["algorithm"], ("C5", "-"))
                c = r["curves"]
                for row, metric in enumerate(("log_loss", "zero_one_loss")):
                    axes[row, col].plot(
                        c["examples"],
                        c[metric],
                        color=color,
                        ls=ls,
                        lw=1.3,
                        label=LABEL.get(r["algorithm"], r["algorithm"]),
                    )
            info = runs[0]["data"] if runs else {}
            axes[0, col].set_title(
                f"{ds} (n={info.get('examples')}, d={info.get('dimension')})", fontsize=9
            )
            axes[0, col].set_ylabel("cumulative avg log loss")
            axes[1, col].set_ylabel("cumulative avg 0-1 loss")
            axes[1, col].set_xlabel("examples")
            for row, metric in enumerate(("log_loss", "zero_one_loss")):
                _zoom(axes[row, col], [r["curves"] for r in runs], metric)
        axes[0, 0].legend(fontsize=7)
        tag = "" if rank is None else f" - sketched methods at rank k={rank} (l={rank + 1})"
        fig.suptitle(f"Appendix A: online logistic regression, tuned{tag}", fontsize=10)
        fig.tight_layout()
        name = "oco_appendix_a.png" if rank is None else f"oco_appendix_a_rank{rank}.png"
        out.append(save_figure(fig, Path(out_dir) / "figures" / name, dpi=110))
        plt.close(fig)
    return out


def _regret_figure(recs: list[dict], out_dir: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ranks = sorted({r["rank"] for r in recs if r["rank"] is not None})
    for r in sorted(recs, key=lambda r: (_key(r["algorithm"]), r["rank"] or 0, r["grid_name"])):
        color, _ = STYLE.get(r["algorithm"], ("C5", "-"))
        label = LABEL.get(r["algorithm"], r["algorithm"])
        ls = "-"
        if r["rank"] is not None:
            label += f" l={r['sketch_size']}"
            ls = "-" if r["rank"] == ranks[-1] else "--"
        if r["grid_name"] != "appendix_a":
            label += f" ({r['grid_name']} grid)"
            ls = ":"
        ax.loglog(
            r["horizons"],
            r["tuned_regret"],
            color=color,
            ls=ls,
            marker=".",
            label=f"{label}: slope {r['exponent']:.2f}",
        )
    inst = recs[0]["instance"]
    ax.set_title(
        f"Observation 2 (r={inst['r']}, unit ball, {inst['seeds']} seeds), tuned per T", fontsize=9
    )
    ax.set_xlabel("T")
    ax.set_ylabel("expected regret")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = save_figure(fig, Path(out_dir) / "figures" / "oco_observation2.png", dpi=110)
    plt.close(fig)
    return path


def _tables(recs: list[dict], regret: list[dict]) -> str:
    lines = ["# Paper Appendix A: online convex optimization (S-AdaGrad and baselines)", ""]
    if recs:
        lines += [
            "Online logistic regression, one pass, float64, intercept appended, w_1 = 0; each "
            "cell is the tuned final cumulative average **log loss** (0-1 loss), best of the "
            "Appendix A grid (lr: 49 log points in [1e-6, 1]; Ada-FD, FD-SON: 7 x 7 lr x "
            "delta). `*`: a tuned value sits on the grid's edge. Sketch: the paper's l (our "
            "rank k = l - 1). The paper's own Appendix A numbers (a9a, cifar10, gisette) are "
            "not available to us (sketchy_paper.md Sec. 7); ours are on the offline datasets "
            "below, at the sizes stated.",
            "",
        ]
        datasets = sorted({r["dataset"] for r in recs})
        by = {(r["algorithm"], r["rank"], r["dataset"]): r for r in recs}
        rows = sorted(
            {(r["algorithm"], r["rank"]) for r in recs}, key=lambda k: (_key(k[0]), k[1] or 0)
        )
        lines += [
            "| algorithm | sketch l (k) | " + " | ".join(datasets) + " |",
            "|---|---|" + "---|" * len(datasets),
        ]
        for alg, rank in rows:
            cells = []
            for ds in datasets:
                r = by.get((alg, rank, ds))
                cells.append(
                    "-"
                    if r is None
                    else f"{r['final']['log_loss']:.4f} ({r['final']['zero_one_loss']:.4f})"
                    f"{_edge(r)}"
                )
            some = next(r for (a, k, _), r in by.items() if (a, k) == (alg, rank))
            lines.append(f"| {LABEL.get(alg, alg)} | {_sketch(some)} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "## Tuned hyperparameters and run time",
            "",
            "| dataset | algorithm | sketch l (k) | best hyperparameters | wall time (s) |",
            "|---|---|---|---|---|",
        ]
        for r in sorted(recs, key=lambda r: (r["dataset"], _key(r["algorithm"]), r["rank"] or 0)):
            hp = ", ".join(f"{k}={v:.3g}" for k, v in r["best_hparams"].items())
            lines.append(
                f"| {r['dataset']} | {LABEL.get(r['algorithm'], r['algorithm'])} | "
                f"{_sketch(r)} | {hp}{_edge(r)} | {r['wall_time_s']:.1f} |"
            )
        lines += [
            "",
            "## Data",
            "",
            "| dataset | examples | features (+1 intercept) | source | label (positive class) |",
            "|---|---|---|---|---|",
        ]
        for ds in datasets:
            info = next(r["data"] for r in recs if r["dataset"] == ds)
            src = info["source"] + (
                f", {info['pool']}x{info['pool']} pooling" if "pool" in info else ""
            )
            lines.append(
                f"| {ds} | {info['examples']} | {info['features']} | {src} | {info['label']} |"
            )
        hw, total = recs[0].get("hardware", {}), sum(r["wall_time_s"] for r in recs)
        lines += [
            "",
            f"Tuning wall time, all grids: {total:.0f} s on {hw.get('cpu_count')} CPU cores "
            f"({hw.get('platform')}), jax {recs[0]['versions'].get('jax')}.",
        ]
    if regret:
        inst = regret[0]["instance"]
        lines += [
            "",
            "## Observation 2: fitted regret exponents",
            "",
            f"f_t(x) = <x, g_t> on the unit ball, g_t uniform over r = {inst['r']} orthonormal "
            f"vectors of R^{inst['d'] or inst['r']}, T = {regret[0]['horizons'][0]}.."
            f"{regret[0]['horizons'][-1]}, regret averaged over {inst['seeds']} seeds and tuned "
            "per T; exponent = least-squares log-log slope over T. Theory (paper Obs. 2, "
            "Thm. 3): Ada-FD Omega(T^3/4) with any sketch l <= r; S-AdaGrad O(T^1/2).",
            "",
            "| algorithm | sketch l (k) | grid | fitted exponent (ours) | theory (paper) | "
            "regret at T_max |",
            "|---|---|---|---|---|---|",
        ]
        for r in sorted(
            regret, key=lambda r: (_key(r["algorithm"]), r["rank"] or 0, r["grid_name"])
        ):
            theory = "-" if r["theory_exponent"] is None else f"{r['theory_exponent']:g}"
            lines.append(
                f"| {LABEL.get(r['algorithm'], r['algorithm'])} | {_sketch(r)} | "
                f"{r['grid_name']} | {r['exponent']:.3f} | {theory} | "
                f"{r['tuned_regret'][-1]:.2f} |"
            )
        lines += ["", READING]
    return "\n".join(lines) + "\n"


def make(records_dir: Path, out_dir: Path) -> list[Path]:
    everything = _load(records_dir)
    recs = [r for r in everything if r.get("experiment") == "oco_appendix_a"]
    regret = [r for r in everything if r.get("experiment") == "oco_observation2"]
    if not recs and not regret:
        return []
    out = _curve_figures(recs, out_dir) if recs else []
    if regret:
        out.append(_regret_figure(regret, out_dir))
    out.append(write_text(Path(out_dir) / "tables" / "oco_appendix_a.md", _tables(recs, regret)))
    return out
