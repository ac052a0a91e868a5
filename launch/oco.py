"""Entry point of the online convex optimization runs (paper Appendix A and Observation 2).

``python launch/oco.py`` runs Appendix A's online logistic regression on the offline data
(``configs/oco/config.yaml``); ``python launch/oco.py experiment=observation2`` the regret
exponents of Observation 2. Config groups (``configs/oco/``): ``problem`` (one or more: a
data set and its loader, or a synthetic regret instance; each names the protocol that runs
it), ``optimizer`` (one or more of the ``sketchy.oco`` family, each with the grids it is
tuned on), ``sweep`` (the grids) and ``experiment``. E.g. ``problem='[a9a]'
libsvm_dir=/data/libsvm optimizer='[s_adagrad,ada_fd]'``. Writes one JSON record per
(problem, optimizer, sketch size[, grid set]) to ``out_dir`` (``results/records/oco/``).

A second entry point beside ``launch/train.py`` because the loop differs: one online pass
over every grid point at once (vmapped), no model, batches, checkpoints or evaluation.
"""

import os

# Every decomposition here is small and batched by vmap; BLAS threads only contend for the
# cores (10-100x slowdowns seen on a shared 2-core machine). Must precede numpy's import.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

import hydra  # noqa: E402
import jax  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from launch import validation  # noqa: E402
from launch.errors import UserError  # noqa: E402
from launch.run_record import write_record  # noqa: E402
from launch.train import REPORTED, report  # noqa: E402

CONFIGS = ROOT / "configs" / "oco"


def run(cfg: DictConfig) -> list[Path]:
    """Every (problem, optimizer) of ``cfg``; the paths of the records written."""
    jax.config.update("jax_enable_x64", cfg.float64)
    out = Path(cfg.out_dir)
    out = out if out.is_absolute() else ROOT / out
    config = OmegaConf.to_container(cfg, resolve=True)
    written, total = [], time.perf_counter()
    # problem=[] or optimizer=[] select nothing (the group's node is then absent).
    for name, problem in cfg.get("problem", {}).items():
        protocol = hydra.utils.instantiate(problem.run)
        for stem, record, summary in protocol(name, problem, cfg.get("optimizer", {}), cfg):
            written.append(write_record(out / f"{stem}.json", {**record, "config": config}))
            print(f"{summary} -> {written[-1].name}", flush=True)
    print(f"done in {time.perf_counter() - total:.0f}s", flush=True)
    return written


@hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except REPORTED as e:  # one line naming the problem and the fix, exit 2
        report(e)


def cli(argv: list[str] | None = None) -> None:
    """``python launch/oco.py ARGS``: one-line checks of the command line, then Hydra."""
    argv = sys.argv[1:] if argv is None else argv
    problem = validation.preflight(argv, CONFIGS)
    if problem is not None:
        report(UserError(problem))
    sys.argv = [sys.argv[0], *argv]
    main()


if __name__ == "__main__":
    cli()
