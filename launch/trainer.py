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
from collections.abc import Callable
from pathlib import Path

import jax
from tqdm.auto import tqdm

from launch import mesh as mesh_lib
from launch import profiling, rank_auto, sharding, train_data, validation
from launch.checkpointing import Checkpointer, state_signature
from launch.errors import NonFiniteError, UserError, warn
from launch.metrics_log import MetricsLog
from launch.run_record import trainer_record, write_record
from launch.sketch_health_log import SketchHealth, logged_shares
from launch.train_step import init_train_state, train_step
from sketchy import memory, spectra
from sketchy.kronecker import optimizer_counters

# Orbax reports every save step at INFO through absl; the metrics log is what users read.
logging.getLogger("absl").setLevel(logging.WARNING)
# JAX logs at INFO every backend it could not start (TPU, proxy) on a CPU machine.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def _check_batch_sizes(trainer_cfg, n_data: int, axes=("data",)) -> None:
    where = f"mesh's {' x '.join(axes)} axis" + ("es" if len(axes) > 1 else "")
    for name in ("batch_size", "eval_batch_size"):
        size = trainer_cfg[name]
        if size < 1 or size % n_data:
            raise UserError(
                f"trainer.{name}={size} is not divisible by the {n_data} devices of the {where}: "
                f"use a positive multiple of {n_data}"
            )


class _NonFinitePolicy:
    """Counts steps whose loss, gradients or update were not finite (the train step kept the
    previous parameters and optimizer state) and stops the run after ``limit`` in a row."""

    def __init__(self, limit: int, total: int, log):
        self.limit, self.total, self.log = limit, total, log
        self.streak, self.first = 0, None

    def observe(self, step: int, flag) -> bool:
        """Record the flag of the step that ended at ``step``; ``True``: stop the run."""
        if not int(flag):
            self.streak = 0
            return False
        self.total += 1
        self.streak += 1
        if self.streak == 1:
            self.first = step
            warn(
                f"step {step}: non-finite loss, gradients or update; step skipped "
                f"(parameters and optimizer state kept)"
            )
        self.log.log(step, {"train/nonfinite_steps_total": self.total})
        return self.streak >= self.limit


def _spectra_summarizer(tcfg, tx, params, logged_shares=()):
    """``opt_state -> {name: value}``: the spectra summary logged every ``spectra_every`` steps.

    With ``trainer.spectra_first_layer`` (a parameter path such as
    ``"['Conv_0']['kernel']"``), also the top-quarter mass share of that parameter's factors
    (paper Fig. 3, left), found once by :func:`sketchy.spectra.owned_blocks`.
    """
    path = tcfg.get("spectra_first_layer")
    owned = None
    if path and tcfg.spectra_every:
        try:
            owned = spectra.owned_blocks(tx, params, path)
        except ValueError as e:
            raise UserError(f"trainer.spectra_first_layer: {e}") from None

    health = SketchHealth.from_config(tcfg, tx, params)  # escaped shares; warns once
    if health is not None:
        health.replay(logged_shares)  # a resumed run's earlier checks

    def summarize(opt_state, step):
        out = spectra.spectra_summary(opt_state, k=tcfg.spectra_top_k)
        out |= health(opt_state, step) if health is not None else {}
        share = spectra.top_quarter_share(opt_state, owned) if owned is not None else None
        if share is not None:
            out["first_layer_top_quarter_share"] = share
        return out

    return summarize


def _compiled(workload, tx, schedule, mesh, layout, rng):
    """The abstract train state, its shardings, the jitted init and the jitted step (the
    state is donated: no second copy of the optimizer)."""
    init = functools.partial(init_train_state, workload, tx)
    abstract = jax.eval_shape(init, rng)
    state_sharding = sharding.train_state_shardings(mesh, layout, abstract)
    step_fn = jax.jit(
        functools.partial(train_step, workload, tx, schedule),
        out_shardings=(state_sharding, mesh_lib.replicated(mesh)),
        donate_argnums=0,
    )
    return abstract, state_sharding, jax.jit(init, out_shardings=state_sharding), step_fn


def _state_metrics(abstract, mesh, state_sharding) -> dict:
    """The optimizer state's bytes by category, in words per parameter, and how it is split
    over the mesh (logged at the start, and again when ``rank_auto`` changes the state)."""
    mem = memory.state_bytes(abstract.opt_state)
    n_params = memory.param_count(abstract.params)
    out = {f"optimizer/bytes_{k}": v for k, v in mem.items()}
    out |= {f"optimizer/bytes_per_param_{k}": v / (4 * n_params) for k, v in mem.items()}
    return out | sharding.report(mesh, abstract, state_sharding)


class _Sigterm:
    """Turns SIGTERM into a flag the loop polls, so it can checkpoint and exit cleanly."""

    def __init__(self):
        self.requested = False
        self._old = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, *_):
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._old)


def train(workload, make_optimizer, schedule, cfg, *, on_ready: Callable | None = None) -> dict:
    """Train ``workload`` with ``make_optimizer(learning_rate=schedule)``; returns final metrics.

    ``on_ready()`` is called once every check has passed (mesh, batch sizes, disk space,
    checkpoints, data), before the first write to the run directory.
    """
    t_start = time.time()
    tcfg = cfg.trainer
    run_dir = Path(cfg.run_dir)

    # ---- Mesh: named axes; batch, parameters and optimizer state placed by `mesh.*`.
    mcfg = cfg.mesh
    mesh_lib.maybe_initialize_distributed(
        mcfg.distributed,
        **{k: mcfg.get(k) for k in ("coordinator_address", "num_processes", "process_id")},
    )
    mesh_lib.check_expected(mcfg.get("expect"), cfg.get("choices", {}).get("mesh"))
    mesh = mesh_lib.make_mesh(dict(mcfg.axes))
    layout = sharding.layout_of(mcfg, mesh)
    n_data = sharding.batch_shards(mesh, layout)
    _check_batch_sizes(tcfg, n_data, layout.batch_axes)
    profiler = profiling.StepProfiler(
        profiling.check_steps(tcfg.get("profile_steps"), tcfg.steps), run_dir
    )
    main_process = jax.process_index() == 0

    # ---- Abstract init and shardings; with rank_auto, the warm-up (or already allocated) ranks.
    ranks_auto = rank_auto.settings(cfg, make_optimizer)
    opt_kwargs = sharding.optimizer_options(make_optimizer, mesh, layout)
    allocated = rank_auto.load(run_dir) if ranks_auto is not None else None
    if allocated is not None:
        opt_kwargs["factor_ranks"] = allocated
    tx = make_optimizer(learning_rate=schedule, **opt_kwargs)
    rng = jax.random.PRNGKey(cfg.seed)
    abstract, state_sharding, init_fn, step_fn = _compiled(
        workload, tx, schedule, mesh, layout, rng
    )
    if "rank" in cfg.optimizer:
        validation.warn_full_rank(cfg.optimizer.rank, abstract.opt_state)
    signature = state_signature(abstract)
    state_nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
    if main_process:
        validation.check_free_space(run_dir, state_nbytes, tcfg.keep_checkpoints)

    # ---- Restore (automatic when run_dir holds a checkpoint) or initialize.
    ckpt = Checkpointer(
        run_dir / "checkpoints", every=tcfg.checkpoint_every, keep=tcfg.keep_checkpoints
    )
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract,
        state_sharding,
    )
    restored = ckpt.restore_newest_valid(target, signature)
    if restored is not None:
        state, saved_meta, resumed_from = restored
    else:
        state, saved_meta, resumed_from = init_fn(rng), {}, None
    start = int(state.step)

    # ---- Data: the first batch and every evaluation split, before anything is written.
    put = functools.partial(mesh_lib.put_batch, mesh=mesh, axes=layout.batch_axes)
    data = train_data.first_batch(workload, tcfg, cfg.seed, n_data, start)
    if on_ready is not None:
        on_ready()

    log = MetricsLog(
        run_dir,
        wandb_mode=cfg.logger.wandb_mode,
        project=cfg.logger.project,
        run_name=run_dir.name,
        config=cfg.to_dict(),
        tags=list(cfg.logger.tags),
        is_main_process=main_process,
    )
    static = _state_metrics(abstract, mesh, state_sharding)
    static |= {"model/num_params": memory.param_count(abstract.params), "mesh/data": n_data}
    if resumed_from is not None:
        static["resumed_from_step"] = resumed_from
    log.log(start, static)
    meta = {"seed": cfg.seed, "run_dir": str(run_dir), "signature": signature}
    policy = _NonFinitePolicy(
        tcfg.get("max_nonfinite_steps") or 10, int(saved_meta.get("nonfinite_total", 0)), log
    )

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

    # A resumed run's earlier health checks (since the rank_auto switch, which starts afresh).
    since = ranks_auto.warmup_steps if allocated is not None else -1
    shares = logged_shares(run_dir, since, start) if resumed_from is not None else []
    summarize_spectra = _spectra_summarizer(tcfg, tx, state.params, shares)

    # ---- Loop.
    sigterm = _Sigterm()
    stopped_early = diverged = False
    # The non-finite flag of a step is read after the next step is dispatched (no stall).
    pending, compiled = None, False
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
            if not compiled:  # the first step, and the first after a rank_auto switch
                compiled = True
                t0 = time.time()
                step_fn = step_fn.lower(state, batch).compile()
                log.log(step, {"compile_time_s": time.time() - t0})
                t_last = time.time()
            with profiler.step(step + 1):
                state, metrics = step_fn(state, batch)
            profiler.after(step + 1, state)
            done, steps_since = step + 1, steps_since + 1
            if pending is not None and policy.observe(*pending):
                diverged = True
                break
            pending = (done, metrics["train/nonfinite_step"])
            if done % tcfg.log_every == 0 or done == tcfg.steps:
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                dt = (time.time() - t_last) / steps_since
                metrics |= {"perf/step_time_s": dt, "perf/examples_per_s": tcfg.batch_size / dt}
                metrics["train/nonfinite_steps_total"] = policy.total
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
                summary = summarize_spectra(mesh_lib.host_readable(state.opt_state, mesh), done)
                log.log(done, {f"spectra/{k}": v for k, v in summary.items()})
            if tcfg.eval_every and done % tcfg.eval_every == 0 and done < tcfg.steps:
                evaluate(done, tcfg.eval_splits)
                t_last = time.time()
            step_meta = meta | {"step": done, "nonfinite_total": policy.total}
            if ranks_auto and allocated is None and done == ranks_auto.warmup_steps:
                allocated, opt_state, summary = rank_auto.switch(
                    ranks_auto,
                    *mesh_lib.host_readable((state.opt_state, state.params), mesh),
                    getattr(make_optimizer, "keywords", {}) | opt_kwargs,
                )
                opt_kwargs["factor_ranks"] = allocated
                tx = make_optimizer(learning_rate=schedule, **opt_kwargs)
                abstract, state_sharding, _, step_fn = _compiled(
                    workload, tx, schedule, mesh, layout, rng
                )
                state = jax.device_put(state._replace(opt_state=opt_state), state_sharding)
                compiled, meta["signature"] = False, state_signature(abstract)
                step_meta["signature"] = meta["signature"]
                ckpt.save(done, state, step_meta, force=True)
                ckpt.wait()  # the ranks file promises a checkpoint with these shapes
                if main_process:
                    rank_auto.save(run_dir, done, allocated, summary)
                switched = _state_metrics(abstract, mesh, state_sharding)
                log.log(done, rank_auto.metrics(summary) | switched)
                summarize_spectra = _spectra_summarizer(tcfg, tx, state.params)
            ckpt.save(done, state, step_meta)
            if sigterm.requested:
                ckpt.save(done, state, step_meta, force=True)
                stopped_early = True
                break
        else:
            if pending is not None and policy.observe(*pending):
                diverged = True
    except BaseException:
        # Let the checkpoint being written in the background finish (it is a good one).
        try:
            ckpt.close()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise
    finally:
        profiler.close()
        sigterm.restore()
        bar.close()

    if diverged:
        ckpt.close()
        last = ckpt.latest_step()
        log.log(policy.first, {"stopped_by_nonfinite": 1})
        log.close()
        raise NonFiniteError(
            f"training stopped: {policy.streak} consecutive steps ({policy.first}-"
            f"{policy.first + policy.streak - 1}) had a non-finite loss, gradients or update "
            f"(each skipped, parameters kept); the last checkpoint is step {last} in "
            f"{run_dir / 'checkpoints'}: lower optimizer.learning_rate or check the data, then "
            f"rerun to resume (the limit is trainer.max_nonfinite_steps={policy.limit})"
        )

    if stopped_early:
        ckpt.close()
        log.log(int(state.step), {"stopped_by_sigterm": 1})
        log.close()
        print(f"SIGTERM: saved step {int(state.step)} to {run_dir}; rerun to resume")
        return {}

    final_step = int(state.step)
    ckpt.save(
        final_step,
        state,
        meta | {"step": final_step, "nonfinite_total": policy.total},
        force=ckpt.latest_step() != final_step,
    )
    ckpt.close()
    final = evaluate(final_step, tcfg.final_splits)
    final["step"] = final_step
    log.close()
    if main_process and cfg.record_dir:
        # Keyed by (experiment, record_name): rerunning a (config, seed) replaces its record.
        name = cfg.get("record_name") or run_dir.name
        record = Path(cfg.record_dir) / cfg.experiment_name / f"{name}.json"
        fields = trainer_record(
            config=cfg.to_dict(),
            run_dir=run_dir,
            final=final,
            wall_time_s=time.time() - t_start,
            extra={"targets": dict(getattr(workload, "targets", {}))}
            | rank_auto.record_fields(run_dir),
        )
        write_record(record, fields)
        final["record"] = str(record)
    return final
