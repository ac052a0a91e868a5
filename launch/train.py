"""Entry point: ``python launch/train.py workload=ogbg_molpcba optimizer=sketchy rank=256``.

Hydra stays here: this file composes the config, instantiates the workload, the optimizer
(a partial taking ``learning_rate``) and the schedule, and hands the trainer the rest of
the resolved config as an immutable ``FrozenConfigDict``.

Bad input exits with one line (``error: <problem>: <fix>``) and code 2, before anything is
written (what a refused run created in its run directory is removed again); a run stopped
by the non-finite policy exits with code 3. ``SKETCHY_DEBUG=1`` shows the traceback.
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

from launch import validation  # noqa: E402
from launch.errors import UserError  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Reported as one line (the message names the problem and the fix), never a traceback.
REPORTED = (UserError, InstantiationException, ValueError, FileNotFoundError, TypeError)


def run(cfg: DictConfig, workload=None) -> dict:
    """Validate, instantiate and train; ``workload`` replaces ``cfg.workload`` when given.

    Bad input raises before anything is written, and whatever this call created in the run
    directory up to then is removed again.
    """
    run_dir = Path(cfg.run_dir)
    try:
        hydra_dir = HydraConfig.get().runtime.output_dir
    except Exception:  # noqa: BLE001 - composed without a Hydra run (tests, notebooks)
        hydra_dir = None
    guard = validation.RunDirGuard(run_dir, hydra_dir)
    armed = True

    def on_ready():  # every check passed: the run directory is now the run's
        nonlocal armed
        armed = False
        if jax.process_index() == 0:
            write_text(run_dir / "config.yaml", OmegaConf.to_yaml(resolved))

    try:
        # Imported here, not at the top: `train.py --help` and config errors stay fast.
        import jax

        from launch.atomic import write_text
        from launch.trainer import train

        # Before the workload is built: a float64 loss needs it (workload=quadratic).
        jax.config.update("jax_enable_x64", bool(cfg.trainer.get("jax_enable_x64", False)))
        use_compilation_cache(cfg.trainer.get("compilation_cache_dir"))

        resolved = OmegaConf.to_container(cfg, resolve=True)
        validation.check_config(resolved)
        validation.check_run_dir(run_dir)
        workload = instantiate(cfg.workload) if workload is None else workload
        make_optimizer = instantiate(cfg.optimizer)
        schedule = instantiate(cfg.schedule)(
            peak_value=cfg.optimizer.learning_rate, total_steps=cfg.trainer.steps
        )
        config = dict(resolved)
        # Which option of each config group was chosen (names used by records and figures).
        if HydraConfig.initialized():
            config["choices"] = {
                k: v
                for k, v in HydraConfig.get().runtime.choices.items()
                if not k.startswith("hydra")
            }
        return train(
            workload, make_optimizer, schedule, FrozenConfigDict(config), on_ready=on_ready
        )
    except BaseException as e:
        if armed and isinstance(e, REPORTED):
            guard.undo()
        raise


def use_compilation_cache(path: str | None) -> None:
    """JAX's persistent compilation cache in ``path`` (``~`` expanded; ``None``: off), before
    the first compile of the process. ``JAX_COMPILATION_CACHE_DIR``, which JAX reads
    itself, takes precedence (the tests point it at a cache of their own)."""
    import jax

    if path and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(str(path)))


def report(e: BaseException) -> None:
    """One line naming the problem and the fix on stderr, then exit (2; 3: non-finite stop)."""
    if os.environ.get("SKETCHY_DEBUG"):
        raise e
    print(f"error: {validation.one_line(e)}", file=sys.stderr, flush=True)
    sys.exit(getattr(e, "exit_code", 2))


# An absolute path: also right when called in-process as `launch.train.cli` (tests).
@hydra.main(config_path=str(CONFIGS), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        final = run(cfg)
    except REPORTED as e:
        report(e)
    except Exception as e:
        full = validation.disk_full(e)
        if full is None:
            raise
        report(
            UserError(
                f"no space left on the disk of run_dir={cfg.run_dir} ({full}): free disk "
                f"space, then rerun the same command to resume from the last checkpoint"
            )
        )
    if final:
        shown = {k: round(v, 5) for k, v in final.items() if isinstance(v, float)}
        print(f"final metrics: {shown}")
        print(f"run: {cfg.run_dir}" + (f"\nrecord: {final['record']}" if "record" in final else ""))
    # Returned for sweepers that optimize a metric.
    return final.get(cfg.trainer.objective) if final else None


def cli(argv: list[str] | None = None) -> None:
    """``python launch/train.py ARGS``: one-line checks of the command line, then Hydra."""
    argv = sys.argv[1:] if argv is None else argv
    problem = validation.preflight(argv, CONFIGS)
    if problem is not None:
        if os.environ.get("SKETCHY_DEBUG"):
            print("(SKETCHY_DEBUG) preflight:", problem, file=sys.stderr)
        else:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            sys.exit(2)
    sys.argv = [sys.argv[0], *argv]
    main()


if __name__ == "__main__":
    cli()
