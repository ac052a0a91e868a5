"""Paper Fig. 3: spectra of Shampoo's EMA Kronecker factors over training.

Left: top-k spectral-mass share (the first layer's factors where the record has them, as
the paper's panel, else the mean over all factors larger than k); right: intrinsic
dimension ``tr C / lambda_max`` (mean, shaded inter-quartile range over factors), from the
``spectra/*`` curves of the ``fig3_spectra_*`` records (``make reproduce``, or
``python launch/train.py experiment=fig3_spectra_<workload>_mini``). The Gaussian null
baseline (iid 1024 x d draws, b2 = 0.999) is drawn for reference from its computed records
(``records/fig3_null_baseline``, ``python -m launch.null_baseline``; its table is
``results/plots/fig3_null_baseline.py``'s), or, where those are absent, at the paper's values
(324.63 for d = 1, 862.13 for d = 64), labelled as the paper's.

Table ``fig3_spectra.md``: per run, the share and the intrinsic dimension at the start, the
end and their worst point over training, checked against the paper's two statements (Sec.
5.2 and its blog post): the top 25% of eigenvalues hold more than 80% of the spectral mass
throughout training, and the intrinsic dimension stays below 105 of 1024 (about 10% of the
factor's dimension).
"""

from pathlib import Path

import matplotlib.pyplot as plt

from launch.atomic import save_figure, write_text
from results.plots import fig3_null_baseline
from results.plots.common import load_records

PREFIX = "fig3_spectra"
# The mini-scale runs of every workload (``make reproduce`` runs them after Fig. 2's tuning).
MINI = ("ogbg_molpcba", "imagenet", "librispeech")
# Paper Sec. 5.2 (and its blog post): share of the top quarter of eigenvalues, intrinsic
# dimension bound (of 1024-dim factors).
PAPER_SHARE, PAPER_IDIM, PAPER_DIM = 0.80, 105, 1024


def missing_records(records_dir: Path) -> list[str]:
    """The mini workloads' spectra records that are absent, with the command that makes them."""
    have = load_records(records_dir, PREFIX)
    return [
        f"{PREFIX}_{w}_mini/shampoo_seed0.json (python -m launch.reproduce --study "
        f"{PREFIX}_{w}_mini)"
        for w in MINI
        if f"{PREFIX}_{w}_mini" not in have
    ]


def share_curve(curves: dict) -> tuple[str, str] | None:
    """``(key, description)`` of the top-k share curve: the first layer's if logged."""
    first = next((k for k in curves if k.startswith("spectra/first_layer_top")), None)
    if first:
        return first, "first layer, top quarter"
    mean = next((k for k in curves if k.startswith("spectra/top") and k.endswith("_mean")), None)
    return (mean, "mean over factors") if mean else None


def _values(curve: list) -> list[float]:
    return [v for _, v in curve]


def _summary_row(exp: str, r: dict) -> tuple[str, bool | None, bool | None]:
    """One table row, and whether the two statements hold (None: not measurable)."""
    c, cfg = r["curves"], r["config"]
    k = cfg["trainer"]["spectra_top_k"]
    share = share_curve(c)
    share_txt, share_ok = "-", None
    if share:
        v = _values(c[share[0]])
        share_ok = min(v) > PAPER_SHARE
        share_txt = f"{v[0]:.3f} -> {v[-1]:.3f} (min {min(v):.3f}; {share[1]})"
    idim_txt, idim_ok, frac_txt = "-", None, "-"
    if "spectra/intrinsic_dim_mean" in c:
        v = _values(c["spectra/intrinsic_dim_mean"])
        q25 = _values(c.get("spectra/intrinsic_dim_q25", [[0, float("nan")]]))[-1]
        q75 = _values(c.get("spectra/intrinsic_dim_q75", [[0, float("nan")]]))[-1]
        idim_txt = f"{v[0]:.2f} -> {v[-1]:.2f} (max {max(v):.2f}; IQR at end {q25:.2f}-{q75:.2f})"
        if "spectra/dim_mean" in c:
            frac = max(a / b for a, b in zip(v, _values(c["spectra/dim_mean"]), strict=True))
            idim_ok = frac < PAPER_IDIM / PAPER_DIM
            frac_txt = f"{frac:.3f}"
    n = _values(c.get("spectra/num_factors", [[0, float("nan")]]))[-1]
    row = (
        f"| {exp} | {cfg['trainer']['steps']:,} steps, lr {cfg['optimizer']['learning_rate']:g}, "
        f"b2 {cfg['optimizer']['b2']:g} | {n:.0f} | {k} | {share_txt} | {idim_txt} | {frac_txt} |"
    )
    return row, share_ok, idim_ok


def _verdict(oks: list[bool | None]) -> str:
    known = [o for o in oks if o is not None]
    if not known:
        return "not measured"
    return f"holds in {sum(known)} of {len(known)} runs"


def table(experiments: dict[str, list[dict]], out_dir: Path) -> Path:
    """``tables/fig3_spectra.md``: each run's spectra summary beside the paper's statements."""
    rows, shares, idims = [], [], []
    for exp, records in experiments.items():
        for r in records:
            row, share_ok, idim_ok = _summary_row(exp, r)
            rows.append(row)
            shares.append(share_ok)
            idims.append(idim_ok)
    lines = [
        "# Fig. 3: spectra of Shampoo's EMA Kronecker factors over training",
        "",
        "Shampoo (b2 = 0.999, block 1024, the learning rate tuned for Fig. 2) on the mini "
        "workloads; every `trainer.spectra_every` steps the eigenvalues of every factor "
        "(`sketchy.spectra`). Share: mass in the top k eigenvalues (first -> last logged "
        "value, and the lowest over training). Intrinsic dimension tr C / lambda_max: the mean "
        "over all factors (first -> last, the highest, and the inter-quartile range at the "
        "end); 'max idim / dim' is its highest ratio to the mean factor dimension.",
        "",
        "Scale: ours are mini models (factors of at most a few hundred dimensions) trained for "
        "minutes on a CPU; the paper's are 1024-dim blocks of full-size models trained for "
        "days. Only the relative statements compare.",
        "",
        "| experiment | run | factors | k | top-k share | intrinsic dim (mean over factors) "
        "| max idim / dim |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "| paper's statement (Sec. 5.2) | ours |",
        "|---|---|",
        f"| top 25% of eigenvalues hold > {PAPER_SHARE:.0%} of the mass throughout training "
        f"| {_verdict(shares)} (our k is the Fig. 2 rank, a quarter of the widest layer) |",
        f"| intrinsic dimension < {PAPER_IDIM} of {PAPER_DIM} (< {PAPER_IDIM / PAPER_DIM:.1%} "
        f"of the dimension) | {_verdict(idims)} |",
        "| Gaussian noise of the same EMA has intrinsic dimension 324.6 (d = 1) and 862.1 "
        "(d = 64) of 1024 | see [the null baseline](fig3_null_baseline.md) |",
    ]
    return write_text(Path(out_dir) / "tables" / "fig3_spectra.md", "\n".join(lines) + "\n")


def null_lines(records_dir: Path) -> dict[str, float]:
    """``{label: intrinsic dimension}``: the computed null baseline, else the paper's."""
    records = fig3_null_baseline.load(records_dir)
    if records:
        return {fig3_null_baseline.label(r): r["summary"]["intrinsic_dim"]["mean"] for r in records}
    return {f"null d={d} (paper)": v for d, (v, _) in sorted(fig3_null_baseline.PAPER.items())}


def make(records_dir: Path, out_dir: Path) -> list[Path]:
    experiments = load_records(records_dir, PREFIX)
    if not experiments:
        return []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for exp, records in experiments.items():
        for r in records:
            c = r["curves"]
            share = share_curve(c)
            steps_total = r["config"]["trainer"]["steps"]
            label = f"{exp} seed {r['config']['seed']}"
            if share:
                s, v = zip(*c[share[0]], strict=True)
                left.plot([x / steps_total for x in s], v, label=label)
                left.set_ylabel(f"top-{r['config']['trainer']['spectra_top_k']} mass share")
            if "spectra/intrinsic_dim_mean" in c:
                s, v = zip(*c["spectra/intrinsic_dim_mean"], strict=True)
                frac = [x / steps_total for x in s]
                right.plot(frac, v, label=label)
                if "spectra/intrinsic_dim_q25" in c and "spectra/intrinsic_dim_q75" in c:
                    lo = [p[1] for p in c["spectra/intrinsic_dim_q25"]]
                    hi = [p[1] for p in c["spectra/intrinsic_dim_q75"]]
                    if len(lo) == len(frac) == len(hi):
                        right.fill_between(frac, lo, hi, alpha=0.2)
    for name, value in null_lines(records_dir).items():
        right.axhline(value, ls="--", lw=0.8, color="gray")
        right.annotate(name, (0.0, value), fontsize=7, color="gray", va="bottom")
    right.set_yscale("log")
    right.set_ylabel("intrinsic dimension tr C / lambda_max")
    for ax in (left, right):
        ax.set_xlabel("fraction of training")
    left.legend(fontsize=7)
    fig.tight_layout()
    path = save_figure(fig, Path(out_dir) / "figures" / "fig3_spectra.png", dpi=120)
    plt.close(fig)
    return [path, table(experiments, out_dir)]
