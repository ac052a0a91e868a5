"""Paper Fig. 3: spectra of Shampoo's EMA Kronecker factors over training.

Left: mean top-k spectral-mass share; right: intrinsic dimension ``tr C / lambda_max``
(mean, shaded inter-quartile range over factors), from the ``spectra/*`` curves of the
``fig3_*`` records. The paper's null baseline (iid Gaussian 1024 x d streams, b2 = 0.999:
intrinsic dimension 324.63 for d = 1, 862.13 for d = 64) is drawn for reference.
"""

from pathlib import Path

import matplotlib.pyplot as plt

from results.atomic import save_figure
from results.plots.common import load_records

NULL_INTRINSIC_DIM = {"null d=1": 324.63, "null d=64": 862.13}


def make(records_dir: Path, out_dir: Path) -> list[Path]:
    experiments = load_records(records_dir, "fig3_")
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
    for name, value in NULL_INTRINSIC_DIM.items():
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
