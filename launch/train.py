"""Entry point: ``python launch/train.py workload=ogbg_molpcba optimizer=sketchy rank=256``.

Hydra stays here: this file composes the config, instantiates the workload, the optimizer
(a partial taking ``learning_rate``) and the schedule, and hands the trainer the rest of
the resolved config as an immutable ``FrozenConfigDict``. Bad input exits with one line.
"""

import os

# Before anything loads OpenBLAS (JAX's CPU LAPACK): its busy-waiting worker threads make
# eigh/SVD 10-100x slower as soon as another process competes for the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.errors import InstantiationException  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from ml_collections import FrozenConfigDict  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from launch.errors import UserError  # noqa: E402


def run(cfg: DictConfig) -> dict:
    # Imported here, not at the top: `train.py --help` and config errors stay fast.
    import jax

    from launch.trainer import train
    from results.atomic import write_text

    workload = instantiate(cfg.workload)
    make_optimizer = instantiate(cfg.optimizer)
    schedule = instantiate(cfg.schedule)(
        peak_value=cfg.optimizer.learning_rate, total_steps=cfg.trainer.steps
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if jax.process_index() == 0:
        write_text(Path(cfg.run_dir) / "config.yaml", OmegaConf.to_yaml(resolved))
    # Which option of each config group was chosen (names used by records and figures).
    resolved["choices"] = {
        k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")
    }
    return train(workload, make_optimizer, schedule, FrozenConfigDict(resolved))


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        final = run(cfg)
    except (UserError, InstantiationException, ValueError, FileNotFoundError, TypeError) as e:
        if os.environ.get("SKETCHY_DEBUG"):
            raise
        # One line naming the problem and the fix (set SKETCHY_DEBUG=1 for the traceback).
        message = " ".join(str(e).split())
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    if final:
        shown = {k: round(v, 5) for k, v in final.items() if isinstance(v, float)}
        print(f"final metrics: {shown}")
        print(f"run: {cfg.run_dir}" + (f"\nrecord: {final['record']}" if "record" in final else ""))
    # Returned for sweepers that optimize a metric.
    return final.get(cfg.trainer.objective) if final else None


if __name__ == "__main__":
    main()
