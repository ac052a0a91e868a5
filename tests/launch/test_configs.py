"""Every config of every group composes and instantiates."""

import jax
import jax.numpy as jnp
import optax
import pytest
from conftest import CONFIGS, compose_config
from hydra.utils import instantiate

GROUPS = [
    "workload",
    "optimizer",
    "schedule",
    "mesh",
    "trainer",
    "logger",
    "experiment",
    "sweep",
    "debug",
    "tuned",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def test_every_group_has_configs():
    for group in GROUPS:
        assert options(group), f"configs/{group}/ is empty"


@pytest.mark.parametrize("name", options("optimizer"))
def test_optimizer_instantiates_and_steps(name):
    cfg = compose_config([f"optimizer={name}", "run_dir=/tmp/unused"])
    make = instantiate(cfg.optimizer)
    tx = make(learning_rate=optax.constant_schedule(1e-3))
    params = {"w": jnp.ones((8, 6)), "b": jnp.ones(6)}
    state = tx.init(params)
    grads = jax.tree.map(lambda x: 0.1 * x, params)
    updates, _ = tx.update(grads, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


def test_rank_reaches_the_optimizer():
    cfg = compose_config(["optimizer=sketchy", "rank=64", "run_dir=/tmp/unused"])
    assert cfg.optimizer.rank == 64
    assert instantiate(cfg.optimizer).keywords["rank"] == 64


@pytest.mark.parametrize("name", options("schedule"))
def test_schedules(name):
    cfg = compose_config([f"schedule={name}", "run_dir=/tmp/unused"])
    sched = instantiate(cfg.schedule)(peak_value=0.5, total_steps=100)
    values = [float(sched(s)) for s in range(0, 101, 10)]
    assert max(values) <= 0.5 + 1e-6 and max(values) > 0


@pytest.mark.parametrize(
    "group", ["workload", "mesh", "trainer", "logger", "experiment", "sweep", "debug", "tuned"]
)
def test_group_options_compose(group, tmp_path):
    for name in options(group):
        cfg = compose_config([f"{group}={name}", f"run_dir={tmp_path}"])
        assert cfg.trainer.steps > 0 and "data" in cfg.mesh.axes
        if group == "workload":
            # As launch/train.py: a workload may ask for 64-bit arithmetic.
            with jax.enable_x64(cfg.trainer.jax_enable_x64):
                workload = instantiate(cfg.workload)
            assert workload.name == name


@pytest.mark.parametrize("name", options("tuned"))
def test_tuned_settings_pick_their_optimizer(name):
    # tuned/<workload>_<optimizer>.yaml selects that optimizer, which then instantiates.
    workload = next(w for w in options("workload") if name.startswith(w + "_"))
    optimizer = name.removeprefix(workload + "_")
    cfg = compose_config([f"workload={workload}", f"tuned={name}", "run_dir=/tmp/unused"])
    plain = compose_config([f"optimizer={optimizer}", "run_dir=/tmp/unused"])
    assert cfg.optimizer._target_ == plain.optimizer._target_
    tx = instantiate(cfg.optimizer)(learning_rate=optax.constant_schedule(1e-3))
    params = {"w": jnp.ones((8, 6))}
    updates, _ = tx.update(params, tx.init(params), params)
    assert bool(jnp.all(jnp.isfinite(updates["w"])))
