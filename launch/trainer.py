"""The one shared trainer: mesh -> data -> abstract init -> shardings -> jitted init ->
jitted update -> restore -> loop (eval, logging, checkpointing) -> record.

Extended by config only; it never branches on a workload or optimizer name. It receives
instantiated objects and an immutable ``ml_collections.FrozenConfigDict``; nothing here
depends on Hydra.
"""

import functools
import logging
import signal
import sys
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

from launch import mesh as mesh_lib
from launch.checkpointing import Checkpointer
from launch.errors import UserError
from launch.metrics_log import MetricsLog
from launch.run_record import write_record
from launch.train_step import init_train_state, train_step
from sketchy import memory, spectra
from sketchy.kronecker import optimizer_counters

# Orbax reports every save step at INFO through absl; the metrics log is what users read.
logging.getLogger("absl").setLevel(logging.WARNING)
# JAX logs at INFO every backend it could not start (TPU, proxy) on a CPU machine.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def _check_batch_sizes(trainer_cfg, n_data: int) -> None:
    for name in ("batch_size", "eval_batch_size"):
        size = trainer_cfg[name]
        if size < 1 or size % n_data:
            raise UserError(
                f"trainer.{name}={size} is not divisible by the {n_data} devices of the mesh's "
                f"data axis: use a positive multiple of {n_data}"
            )


class _Sigterm:
    """Turns SIGTERM into a flag the loop polls, so it can checkpoint and exit cleanly."""

    def __init__(self):
        self.requested = False
        self._old = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, *_):
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._old)


def train(workload, make_optimizer, schedule, cfg) -> dict:
    """Train ``workload`` with ``make_optimizer(learning_rate=schedule)``; returns final metrics."""
    t_start = time.time()
    tcfg = cfg.trainer
    run_dir = Path(cfg.run_dir)

    # ---- Mesh: named axes, batch sharded on `data`, everything else replicated.
    mesh_lib.maybe_initialize_distributed(cfg.mesh.distributed)
    mesh = mesh_lib.make_mesh(dict(cfg.mesh.axes))
    n_data = mesh.shape["data"]
    _check_batch_sizes(tcfg, n_data)
    main_process = jax.process_index() == 0

    # ---- Abstract init and shardings.
    tx = make_optimizer(learning_rate=schedule)
    init = functools.partial(init_train_state, workload, tx)
    rng = jax.random.PRNGKey(cfg.seed)
    abstract = jax.eval_shape(init, rng)
    repl = mesh_lib.replicated(mesh)
    state_sharding = jax.tree.map(lambda _: repl, abstract)

    # ---- Jitted init and update (the state is donated: no second copy of the optimizer).
    init_fn = jax.jit(init, out_shardings=state_sharding)
    step_fn = jax.jit(
        functools.partial(train_step, workload, tx, schedule),
        out_shardings=(state_sharding, repl),
        donate_argnums=0,
    )

    # ---- Restore (automatic when run_dir holds a checkpoint) or initialize.
    ckpt = Checkpointer(
        run_dir / "checkpoints", every=tcfg.checkpoint_every, keep=tcfg.keep_checkpoints
    )
    resumed_from = ckpt.latest_step()
    if resumed_from is not None:
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract,
            state_sharding,
        )
        state, _ = ckpt.restore(target)
    else:
        state = init_fn(rng)
    start = int(state.step)

    log = MetricsLog(
        run_dir,
        wandb_mode=cfg.logger.wandb_mode,
        project=cfg.logger.project,
        run_name=run_dir.name,
        config=cfg.to_dict(),
        tags=list(cfg.logger.tags),
        is_main_process=main_process,
    )
    mem = memory.state_bytes(abstract.opt_state)
    n_params = memory.param_count(abstract.params)
    static = {f"optimizer/bytes_{k}": v for k, v in mem.items()}
    static |= {f"optimizer/bytes_per_param_{k}": v / (4 * n_params) for k, v in mem.items()}
    static |= {"model/num_params": n_params, "mesh/data": n_data}
    if resumed_from is not None:
        static["resumed_from_step"] = resumed_from
    log.log(start, static)

    put = functools.partial(mesh_lib.put_batch, mesh=mesh)
    data = workload.batches(
        "train", tcfg.batch_size, seed=cfg.seed, num_shards=n_data, start_step=start
    )
    meta = {"seed": cfg.seed, "run_dir": str(run_dir)}

    def evaluate(step: int, splits) -> dict:
        out = {}
        for split in splits:
            t0 = time.time()
            out |= workload.evaluate(
                state.params,
                state.model_state,
                split,
                global_batch_size=tcfg.eval_batch_size,
                num_shards=n_data,
                put=put,
            )
            out[f"{split}/eval_time_s"] = time.time() - t0
        log.log(step, out)
        return out

    # ---- Loop.
    sigterm = _Sigterm()
    stopped_early = False
    t_last, steps_since = time.time(), 0
    bar = tqdm(
        range(start, tcfg.steps),
        initial=start,
        total=tcfg.steps,
        desc="train",
        disable=not main_process or not tcfg.progress_bar,
        dynamic_ncols=True,
        # Redirected output (CI, log files) gets a line every 30 s, not every step.
        mininterval=0.1 if sys.stderr.isatty() else 30.0,
    )
    try:
        for step in bar:
            batch = put(next(data))
            if step == start:
                t0 = time.time()
                step_fn = step_fn.lower(state, batch).compile()
                log.log(step, {"compile_time_s": time.time() - t0})
                t_last = time.time()
            state, metrics = step_fn(state, batch)
            done, steps_since = step + 1, steps_since + 1
            if done % tcfg.log_every == 0 or done == tcfg.steps:
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                dt = (time.time() - t_last) / steps_since
                metrics |= {"perf/step_time_s": dt, "perf/examples_per_s": tcfg.batch_size / dt}
                metrics |= {
                    f"optimizer/{k}": v for k, v in optimizer_counters(state.opt_state).items()
                }
                stats = jax.local_devices()[0].memory_stats() or {}
                metrics |= {
                    f"device/{k}": stats[k]
                    for k in ("bytes_in_use", "peak_bytes_in_use")
                    if k in stats
                }
                log.log(done, metrics)
                bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
                t_last, steps_since = time.time(), 0
            if tcfg.spectra_every and done % tcfg.spectra_every == 0:
                summary = spectra.spectra_summary(state.opt_state, k=tcfg.spectra_top_k)
                log.log(done, {f"spectra/{k}": v for k, v in summary.items()})
            if tcfg.eval_every and done % tcfg.eval_every == 0 and done < tcfg.steps:
                evaluate(done, tcfg.eval_splits)
                t_last = time.time()
            ckpt.save(done, state, meta | {"step": done})
            if sigterm.requested:
                ckpt.save(done, state, meta | {"step": done}, force=True)
                stopped_early = True
                break
    finally:
        sigterm.restore()
        bar.close()

    if stopped_early:
        ckpt.close()
        log.log(int(state.step), {"stopped_by_sigterm": 1})
        log.close()
        print(f"SIGTERM: saved step {int(state.step)} to {run_dir}; rerun to resume")
        return {}

    final_step = int(state.step)
    ckpt.save(
        final_step, state, meta | {"step": final_step}, force=ckpt.latest_step() != final_step
    )
    ckpt.close()
    final = evaluate(final_step, tcfg.final_splits)
    final["step"] = final_step
    log.close()
    if main_process and cfg.record_dir:
        record = Path(cfg.record_dir) / cfg.experiment_name / f"{run_dir.name}.json"
        write_record(
            record,
            config=cfg.to_dict(),
            run_dir=run_dir,
            final=final,
            wall_time_s=time.time() - t_start,
            extra={"targets": dict(getattr(workload, "targets", {}))},
        )
        final["record"] = str(record)
    return final
