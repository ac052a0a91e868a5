"""Paper Appendix A (online logistic regression) and Observation 2 (regret exponents).

Reads ``records/oco/*.json`` (written by ``launch/oco.py``); writes
``figures/oco_appendix_a_rank<k>.png`` (one column per dataset; rows: cumulative average log
loss and 0-1 loss vs examples; the sketched methods at rank ``k``, the unsketched ones in
every figure), ``figures/oco_observation2.png`` (tuned regret vs ``T``, log-log, one panel
per instance) and ``tables/oco_appendix_a.md``.
"""

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from launch.atomic import save_figure, write_text  # noqa: E402

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


def _span(runs: list[dict], algorithms: set[str], key: str) -> str:
    """``lo-hi`` of ``key`` over the records of ``algorithms`` (``-`` if there are none)."""
    vals = [r[key] for r in runs if r["algorithm"] in algorithms]
    if not vals:
        return "-"
    lo, hi = f"{min(vals):.2f}", f"{max(vals):.2f}"
    return lo if lo == hi else f"{lo}-{hi}"


def _reading(regret: list[dict]) -> str:
    """What the Observation 2 numbers say; the ranges are read off the records."""
    decaying = {"s_adagrad", "ogd", "full_adagrad"}  # steps ~ 1/sqrt(t) on this instance
    signed = [r for r in regret if r["dataset"] == "observation2"]
    unsigned = [r for r in regret if r["dataset"] == "observation2_unsigned"]
    text = ["Reading."]
    if signed:
        text.append(
            "Signed instance: x_t depends on g_1..g_{t-1} only and E g_t = 0, so "
            "E <x_t, g_t> = 0 and *every* method's expected regret is the comparator term "
            "R E||sum_t g_t|| <= R sqrt(T) (E||sum_t g_t||^2 = T exactly), whatever its steps, "
            "sketch or tuning. The cross-fitted exponents (S-AdaGrad, OGD, full AdaGrad "
            f"{_span(signed, decaying, 'heldout_exponent')}; Ada-FD "
            f"{_span(signed, {'ada_fd'}, 'heldout_exponent')}; comparator term "
            f"{signed[0]['comparator_exponent']:.2f}) agree within seed noise, and so this "
            "instance cannot separate Ada-FD from S-AdaGrad. Their residual differences are "
            "noise that is shared across methods: a method that follows the leader has an own "
            "loss strongly anti-correlated with ||sum_t g_t|| (about -0.9), so on seeds with a "
            "large ||sum_t g_t|| it looks better than a nearly static one (Ada-FD with tiny "
            "steps, own loss ~ 0) although both have the same expectation. This seed set has "
            "such a large ||sum_t g_t|| (mean "
            f"{signed[0]['comparator_term'][-1] / math.sqrt(signed[0]['horizons'][-1]):.3f} "
            "sqrt(T) at T_max, where E||sum_t g_t|| < sqrt(T)), hence the negative own losses."
        )
    if unsigned:
        ada_fd_grids = sorted({r["grid_name"] for r in unsigned if r["algorithm"] == "ada_fd"})
        ada_fd_fixed = ", ".join(
            f"{g} grid "
            + _span([r for r in unsigned if r["grid_name"] == g], {"ada_fd"}, "fixed_exponent")
            for g in ada_fd_grids
        )
        text.append(
            "Unsigned instance: here the methods differ. With exactly orthonormal gradients the "
            "FD sketch is deflated to zero every l rounds (its eigenvalues stay O(1) while "
            "rho_{1:t} ~ t / l), so Ada-FD is in effect constant-step OGD (step ~ lr / delta) "
            "and S-AdaGrad is OGD with step ~ lr sqrt(l / t). Tuned per T, a constant step "
            "pays about R^2 / step + c step T, i.e. sqrt(T): Ada-FD "
            f"{_span(unsigned, {'ada_fd'}, 'heldout_exponent')}, against "
            f"{_span(unsigned, decaying, 'heldout_exponent')} for the 1/sqrt(t) methods. With "
            "one setting for all T the fitted slope is a finite-range number, not an asymptotic "
            "exponent (a constant step's regret A / step + B step T bends from flat to linear, "
            f"and where the bend falls depends on the grid): Ada-FD {ada_fd_fixed}, the others "
            f"{_span(unsigned, decaying, 'fixed_exponent')}. The ordering of Observation 2 "
            "reproduces on this instance, not its values 0.75 / 0.5."
        )
    text.append(
        "[inference] Tuned per T over unbounded (lr, delta), Ada-FD is O(D G sqrt(T)) on "
        "*every* sequence with ||g_t|| <= G: the mirror-descent bound for H_t = delta I + "
        "Gbar_t^{1/2} is (D^2 (delta + sum_t ||H_t - H_{t-1}||) / lr + lr sum_t ||g_t||^2 / "
        "delta) / 2 with H_0 = delta I and ||H_t - H_{t-1}|| <= G (the square root is "
        "1/2-Hoelder and one FD update changes Gbar by at most G^2), so delta ~ G T and "
        "lr / delta ~ D / (G sqrt(T)) give O(D G sqrt(T)). The paper's Omega(T^3/4) must "
        "rest on a restriction on the tuning (e.g. delta or lr independent of T) stated in its "
        "appendix, which we do not have."
    )
    return " ".join(text)


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


INSTANCE_TITLE = {
    "observation2": "signed: g_t = +-v_i (zero mean)",
    "observation2_unsigned": "unsigned: g_t = v_i",
}


def _regret_figure(recs: list[dict], out_dir: Path) -> Path:
    """One panel per instance: cross-fitted per-T tuned regret of each method, log-log, and
    the comparator term R E||sum g_t|| shared by all methods."""
    instances = sorted({r["dataset"] for r in recs})
    fig, axes = plt.subplots(1, len(instances), figsize=(6.4 * len(instances), 4.6), squeeze=False)
    ranks = sorted({r["rank"] for r in recs if r["rank"] is not None})
    for ax, inst_name in zip(axes[0], instances, strict=True):
        runs = [r for r in recs if r["dataset"] == inst_name]
        for r in sorted(runs, key=lambda r: (_key(r["algorithm"]), r["rank"] or 0, r["grid_name"])):
            color, _ = STYLE.get(r["algorithm"], ("C5", "-"))
            label = LABEL.get(r["algorithm"], r["algorithm"])
            ls = "-"
            if r["rank"] is not None:
                label += f" l={r['sketch_size']}"
                ls = "-" if r["rank"] == ranks[-1] else "--"
            if r["grid_name"] != "appendix_a":
                label += f" ({r['grid_name']} grid)"
                ls = ":" if r["grid_name"] == "wide" else (0, (3, 1, 1, 1))
            ax.loglog(
                r["horizons"],
                r["heldout_regret"],
                color=color,
                ls=ls,
                marker=".",
                label=f"{label}: slope {r['heldout_exponent']:.2f}",
            )
        ref = runs[0]
        if inst_name == "observation2":  # signed: the comparator term is E[regret] of any method
            ax.loglog(
                ref["horizons"],
                ref["comparator_term"],
                color="k",
                ls="-.",
                lw=2,
                alpha=0.5,
                label="R ||sum g_t|| (= E regret of any method): "
                f"slope {ref['comparator_exponent']:.2f}",
            )
        # Guides with the theory's slopes, through the lowest regret at the smallest T.
        t = np.asarray(ref["horizons"], float)
        low = min(r["heldout_regret"][0] for r in runs)
        for power, ls in ((0.5, (0, (1, 3))), (0.75, (0, (5, 5)))):
            ax.loglog(t, low * (t / t[0]) ** power, color="0.6", lw=0.8, ls=ls, label=f"T^{power}")
        inst = ref["instance"]
        ax.set_title(
            f"Observation 2, {INSTANCE_TITLE.get(inst_name, inst_name)}\n"
            f"r={inst['r']}, R={inst['radius']:g}, {inst['seeds']} seeds; tuned per T, "
            "cross-fitted over seed halves",
            fontsize=9,
        )
        ax.set_xlabel("T")
        ax.set_ylabel("expected regret")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    path = save_figure(fig, Path(out_dir) / "figures" / "oco_observation2.png", dpi=110)
    plt.close(fig)
    return path


def _regret_table(regret: list[dict]) -> list[str]:
    lines = [
        "",
        "## Observation 2: fitted regret exponents",
        "",
        "f_t(x) = <x, g_t> on the ball of radius R, g_t one of r orthonormal vectors of R^d "
        "(signed: times a random sign), i.i.d. over t; regret = sum_t <x_t, g_t> + "
        "R ||sum_t g_t||. Exponent = least-squares log-log slope of the seed-averaged regret "
        "over T. Tunings: *per T, in-sample* picks the best grid point at each T on the seeds "
        "it is scored on (the protocol of the previous version; optimistic, it selects noise); "
        "*per T, cross-fitted* picks it on the even seeds and scores on the odd ones and vice "
        "versa (unbiased); *one setting* picks one grid point for all T (smallest sum of "
        "log-regrets, cross-fitted). *Own loss* = sum_t <x_t, g_t> at T_max under the "
        "cross-fitted per-T tuning, mean +- standard error over seeds; the comparator term "
        "R ||sum g_t|| is the same for every method. Theory (paper Obs. 2, Thm. 3): Ada-FD "
        "Omega(T^3/4) with any sketch l <= r; S-AdaGrad O(T^1/2).",
    ]
    for inst_name in sorted({r["dataset"] for r in regret}):
        runs = [r for r in regret if r["dataset"] == inst_name]
        inst, ref = runs[0]["instance"], runs[0]
        lines += [
            "",
            f"### {inst_name}: {INSTANCE_TITLE.get(inst_name, inst_name)}",
            "",
            f"r = {inst['r']}, d = {inst['d'] or inst['r']}, R = {inst['radius']:g}, "
            f"T = {ref['horizons'][0]}..{ref['horizons'][-1]} ({len(ref['horizons'])} "
            f"horizons), {inst['seeds']} seeds. Comparator term at T_max: "
            f"{ref['comparator_term'][-1]:.2f}, exponent {ref['comparator_exponent']:.3f}.",
            "",
            "| algorithm | sketch l (k) | grid | exponent: per T, in-sample | per T, "
            "cross-fitted | one setting | theory (paper) | regret at T_max (cross-fitted) | "
            "own loss at T_max | wall time (s) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(runs, key=lambda r: (_key(r["algorithm"]), r["rank"] or 0, r["grid_name"])):
            theory = "-" if r["theory_exponent"] is None else f"{r['theory_exponent']:g}"
            lines.append(
                f"| {LABEL.get(r['algorithm'], r['algorithm'])} | {_sketch(r)} | "
                f"{r['grid_name']} | {r['exponent']:.3f} | {r['heldout_exponent']:.3f} | "
                f"{r['fixed_exponent']:.3f} | {theory} | {r['heldout_regret'][-1]:.2f} | "
                f"{r['heldout_own_loss'][-1]:.2f} +- {r['heldout_own_loss_se'][-1]:.2f} | "
                f"{r['wall_time_s']:.0f} |"
            )
    return lines + ["", _reading(regret)]


def _tables(recs: list[dict], regret: list[dict]) -> str:
    """The Markdown table file: the Appendix A sections, then Observation 2's."""
    lines = ["# Paper Appendix A: online convex optimization (S-AdaGrad and baselines)", ""]
    if recs:
        lines += _final_losses(recs) + _tuned_hparams(recs) + _data(recs)
    if regret:
        lines += _regret_table(regret)
    return "\n".join(lines) + "\n"


def _final_losses(recs: list[dict]) -> list[str]:
    """Tuned final losses: one row per algorithm and sketch, one column per dataset."""
    datasets = sorted({r["dataset"] for r in recs})
    by = {(r["algorithm"], r["rank"], r["dataset"]): r for r in recs}
    rows = sorted(
        {(r["algorithm"], r["rank"]) for r in recs}, key=lambda k: (_key(k[0]), k[1] or 0)
    )
    lines = [
        "Online logistic regression, one pass, float64, intercept appended, w_1 = 0; each "
        "cell is the tuned final cumulative average **log loss** (0-1 loss), best of the "
        "Appendix A grid (lr: 49 log points in [1e-6, 1]; Ada-FD, FD-SON: 7 x 7 lr x "
        "delta). `*`: a tuned value sits on the grid's edge. Sketch: the paper's l (our "
        "rank k = l - 1). The paper's own Appendix A numbers (a9a, cifar10, gisette) are "
        "not public (the paper prints only plots); ours are on the offline datasets "
        "below, at the sizes stated.",
        "",
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
                else f"{r['final']['log_loss']:.4f} ({r['final']['zero_one_loss']:.4f}){_edge(r)}"
            )
        some = next(r for (a, k, _), r in by.items() if (a, k) == (alg, rank))
        lines.append(f"| {LABEL.get(alg, alg)} | {_sketch(some)} | " + " | ".join(cells) + " |")
    return lines


def _tuned_hparams(recs: list[dict]) -> list[str]:
    """Each run's tuned hyperparameters and wall time."""
    lines = [
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
    return lines


def _data(recs: list[dict]) -> list[str]:
    """Each dataset's size, source and label; then the wall time of all the grids."""
    lines = [
        "",
        "## Data",
        "",
        "| dataset | examples | features (+1 intercept) | source | label (positive class) |",
        "|---|---|---|---|---|",
    ]
    for ds in sorted({r["dataset"] for r in recs}):
        info = next(r["data"] for r in recs if r["dataset"] == ds)
        src = info["source"] + (
            f", {info['pool']}x{info['pool']} pooling" if "pool" in info else ""
        )
        lines.append(
            f"| {ds} | {info['examples']} | {info['features']} | {src} | {info['label']} |"
        )
    hw, total = recs[0].get("hardware", {}), sum(r["wall_time_s"] for r in recs)
    return lines + [
        "",
        f"Tuning wall time, all grids: {total:.0f} s on {hw.get('cpu_count')} CPU cores "
        f"({hw.get('platform')}), jax {recs[0]['versions'].get('jax')}.",
    ]


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
