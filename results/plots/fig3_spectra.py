"""Paper Fig. 3: spectra of Shampoo's EMA Kronecker factors over training.

Left: mean top-k spectral-mass share; right: intrinsic dimension ``tr C / lambda_max``
(mean, shaded inter-quartile range over factors), from the ``spectra/*`` curves of the
``fig3_spectra_*`` records (``python launch/train.py experiment=fig3_spectra_<workload>``).
The Gaussian null baseline (iid 1024 x d draws, b2 = 0.999) is drawn for reference from its
computed records (``records/fig3_null_baseline``, ``python -m launch.null_baseline``; its
table is ``results/plots/fig3_null_baseline.py``'s), or, where those are absent, at the
paper's values (324.63 for d = 1, 862.13 for d = 64), labelled as the paper's.
"""

from pathlib import Path

import matplotlib.pyplot as plt

from results.atomic import save_figure
from results.plots import fig3_null_baseline
from results.plots.common import load_records

PREFIX = "fig3_spectra"
COMMAND = "python launch/train.py experiment=fig3_spectra_ogbg_molpcba"


def missing_records(records_dir: Path) -> list[str]:
    """What this figure needs and lacks, with the command that makes it."""
    if load_records(records_dir, PREFIX):
        return []
    return [f"{PREFIX}_*/*.json ({COMMAND})"]


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
            share_key = next(
                (k for k in c if k.startswith("spectra/top") and k.endswith("_mean")), None
            )
            steps_total = r["config"]["trainer"]["steps"]
            label = f"{exp} seed {r['config']['seed']}"
            if share_key:
                s, v = zip(*c[share_key], strict=True)
                left.plot([x / steps_total for x in s], v, label=label)
                left.set_ylabel(share_key.split("/")[1].replace("_mean", " (mean)"))
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
    return [path]
