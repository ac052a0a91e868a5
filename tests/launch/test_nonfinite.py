"""The non-finite policy, by injection: a workload whose loss is NaN on chosen steps.

Each flagged step is skipped whole (parameters, model and optimizer state kept), counted
and logged; ``trainer.max_nonfinite_steps`` flagged steps in a row stop the run with one
line (exit 3), leaving its last good checkpoint; decomposition failures keep the previous
factor and are counted in the logged metrics.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import MINI_MOLECULES, compose_config
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from launch.errors import NonFiniteError
from launch.metrics_log import read_metrics
from launch.train import run


class PoisonedWorkload:
    """The configured workload, except that the loss of the train batches ``nan_steps``
    (0-based step indices) is multiplied by NaN: every gradient entry is NaN there."""

    def __init__(self, nan_steps=(), **workload_kwargs):
        from workloads.ogbg_molpcba import OgbgMolpcba

        self.inner = OgbgMolpcba(**workload_kwargs)
        self.nan_steps = set(nan_steps)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def batches(self, split, global_batch_size, *, seed, num_shards=1, start_step=0):
        it = self.inner.batches(
            split, global_batch_size, seed=seed, num_shards=num_shards, start_step=start_step
        )
        if split != "train":
            return it

        def poisoned():
            for step, batch in enumerate(it, start=start_step):
                factor = np.nan if step in self.nan_steps else 1.0
                yield {**batch, "poison": np.full((num_shards,), factor, np.float32)}

        return poisoned()

    def loss(self, params, model_state, batch, *, rng, train):
        inner = {k: v for k, v in batch.items() if k != "poison"}
        total, aux = self.inner.loss(params, model_state, inner, rng=rng, train=train)
        if "poison" in batch:
            total = total * jnp.mean(batch["poison"])
        return total, aux


def overrides(data_dir, run_dir, *extra):
    return [
        "debug=smoke",
        f"workload.data_dir={data_dir}",
        f"workload.max_molecules={MINI_MOLECULES}",
        f"run_dir={run_dir}",
        "trainer.checkpoint_every=1",
        "trainer.keep_checkpoints=20",
        "trainer.log_every=1",
        "trainer.spectra_every=0",
        *extra,
    ]


def poisoned_run(cfg, nan_steps):
    kwargs = OmegaConf.to_container(cfg.workload, resolve=True)
    kwargs.pop("_target_")
    return run(cfg, workload=PoisonedWorkload(nan_steps, **kwargs))


def saved(run_dir, step):
    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as mngr:
        return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)
    )


def all_finite(tree) -> bool:
    return all(
        np.all(np.isfinite(np.asarray(x)))
        for x in jax.tree.leaves(tree)
        if np.issubdtype(np.asarray(x).dtype, np.floating)
    )


@pytest.mark.parametrize(
    "optimizer", ["adam", pytest.param("sketchy", marks=pytest.mark.slow)]
)  # Adam: protected by the train step only; Sketchy: by apply_if_finite too
def test_nan_steps_are_skipped_counted_and_logged(optimizer, data_dir, tmp_path, capfd):
    """NaN gradients at steps 2 and 3 (0-based): checkpoints 2, 3, 4 hold the same parameters
    and (Adam: the whole; Sketchy: all but its skip counters) optimizer state, nothing
    non-finite is ever saved, training goes on afterwards, two steps are counted."""
    run_dir = tmp_path / "run"
    cfg = compose_config(
        overrides(data_dir, run_dir, f"optimizer={optimizer}", "rank=8", "trainer.steps=6")
    )
    final = poisoned_run(cfg, nan_steps={2, 3})
    assert final["step"] == 6 and np.isfinite(final["validation/loss"])
    states = {s: saved(run_dir, s) for s in range(1, 7)}
    assert all(all_finite(s) for s in states.values())
    assert leaves_equal(states[2]["params"], states[3]["params"])
    assert leaves_equal(states[2]["params"], states[4]["params"])
    assert not leaves_equal(states[4]["params"], states[5]["params"])  # training resumed
    assert not leaves_equal(states[1]["params"], states[2]["params"])
    if optimizer == "adam":  # unprotected by itself: the train step kept its state
        assert leaves_equal(states[2]["opt_state"], states[4]["opt_state"])
    rows = read_metrics(run_dir)
    flagged = sorted(r["step"] for r in rows if r.get("train/nonfinite_step") == 1.0)
    assert flagged == [3, 4]
    assert max(r.get("train/nonfinite_steps_total", 0) for r in rows) == 2
    last = [r for r in rows if "train/loss" in r][-1]
    assert last["train/nonfinite_steps_total"] == 2
    if optimizer == "sketchy":  # the optimizer's own skip counter advanced too
        assert last["optimizer/skipped_steps"] == 2
    warnings = [line for line in capfd.readouterr().err.splitlines() if "non-finite" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: step 3:")


@pytest.mark.slow  # the CLI test below checks the same stop (exit 3, good checkpoints)
def test_run_stops_after_max_consecutive_nonfinite_steps(data_dir, tmp_path):
    """From step 3 on every gradient is NaN; with max_nonfinite_steps=4 the run stops after
    the 4th in a row (steps 4-7, 1-based), leaving checkpoints of finite, pre-NaN states."""
    run_dir = tmp_path / "run"
    cfg = compose_config(
        overrides(
            data_dir,
            run_dir,
            "optimizer=adam",
            "trainer.steps=30",
            "trainer.max_nonfinite_steps=4",
        )
    )
    with pytest.raises(NonFiniteError, match=r"4 consecutive steps \(4-7\)") as err:
        poisoned_run(cfg, nan_steps=set(range(3, 100)))
    assert err.value.exit_code == 3
    assert "trainer.max_nonfinite_steps=4" in str(err.value)
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] < 10 and f"step {steps[-1]}" in str(err.value)
    good = saved(run_dir, 3)
    for s in steps:
        state = saved(run_dir, s)
        assert all_finite(state)
        if s >= 3:
            assert leaves_equal(state["params"], good["params"])
    assert any(r.get("stopped_by_nonfinite") == 1 for r in read_metrics(run_dir))


def test_nonfinite_stop_through_the_cli_exits_3(data_dir, tmp_path, capfd):
    """Through ``launch/train.py``: the workload chosen by ``workload._target_``, exit code 3,
    one error line (after the warning line of the first skipped step)."""
    from launch.train import cli

    run_dir = tmp_path / "run"
    argv = [
        *overrides(data_dir, run_dir, "optimizer=sgd", "trainer.steps=20"),
        "trainer.max_nonfinite_steps=2",
        "workload._target_=test_nonfinite.PoisonedWorkload",
        "+workload.nan_steps=[1,2,3,4,5,6,7,8,9,10]",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        # Hydra's logging setup would keep handlers on pytest's captured (closed) streams.
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    GlobalHydra.instance().clear()
    assert exit_info.value.code == 3
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2 consecutive steps (2-3)" in errors[0], err
    assert "Traceback" not in err
    assert (run_dir / "config.yaml").exists()  # a real run: its directory is kept
    # The last good checkpoint is kept and named: every checkpoint holds the parameters of
    # step 1 (the only step with a finite gradient), nothing non-finite was saved.
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and steps[0] == 1 and steps[-1] < 10 and f"step {steps[-1]}" in errors[0]
    good = saved(run_dir, 1)
    for step in steps:
        state = saved(run_dir, step)
        assert all_finite(state)
        assert leaves_equal(state["params"], good["params"])
    assert any(r.get("stopped_by_nonfinite") == 1 for r in read_metrics(run_dir))


@pytest.mark.slow  # Shampoo's step compiles in ~40 s on 2 cores
def test_decomposition_failures_keep_the_factor_and_are_logged(data_dir, tmp_path, monkeypatch):
    """Every Shampoo inverse root "fails" (injected): the preconditioners stay the identity
    they started as, the state stays finite, and the failures are counted in the metrics."""
    shampoo_module = importlib.import_module("sketchy.shampoo")  # (sketchy.shampoo: the function)
    real = shampoo_module.inverse_root

    def failing(statistics, exponent, eps, relative_eps):
        root, ok, empty = real(statistics, exponent, eps, relative_eps)
        return jnp.full_like(root, jnp.nan), jnp.zeros_like(ok), empty

    monkeypatch.setattr(shampoo_module, "inverse_root", failing)
    run_dir = tmp_path / "run"
    cfg = compose_config(
        overrides(
            data_dir,
            run_dir,
            "optimizer=shampoo",
            "optimizer.update_freq=2",
            "optimizer.start_preconditioning_step=0",
            "trainer.steps=6",
        )
    )
    run(cfg)
    state = saved(run_dir, 6)
    assert all_finite(state)
    found = []

    def visit(path, leaf):
        if "preconditioner" in jax.tree_util.keystr(path):
            found.append(np.asarray(leaf))

    jax.tree_util.tree_map_with_path(visit, state["opt_state"])
    assert found
    for p in found:  # (blocks, d, d) stacks of identities
        np.testing.assert_array_equal(p, np.broadcast_to(np.eye(p.shape[-1]), p.shape))
    rows = [r for r in read_metrics(run_dir) if "optimizer/decomposition_failures" in r]
    failures = {r["step"]: r["optimizer/decomposition_failures"] for r in rows}
    # Refreshes at counts 0, 2, 4, one failure per factor each; the count only grows.
    assert failures[6] > failures[2] > 0
    assert list(failures.values()) == sorted(failures.values())
