"""launch/checkpointing.py: which steps are saved and kept, which step a resume restores.

Every saved state encodes its step in its values (parameters filled with the step, the
optimizer state after that many updates), so restoring the wrong checkpoint cannot pass.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compose_config

import sketchy
from launch.checkpointing import Checkpointer
from launch.metrics_log import read_metrics
from launch.train import run
from launch.train_step import TrainState

TX = sketchy.scale_by_sketchy(rank=2, block_size=8, update_freq=1, start_preconditioning_step=0)
PARAMS = {"w": jnp.zeros((4, 3)), "b": jnp.zeros((3,))}


def state_at(step: int) -> TrainState:
    """A train state whose every leaf depends on ``step``."""
    params = jax.tree.map(lambda x: jnp.full_like(x, float(step)), PARAMS)
    # The optimizer's state NamedTuples (counts, sketches, graft), shifted by the step.
    opt_state = jax.tree.map(lambda x: (x + step).astype(x.dtype), TX.init(params))
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        model_state={},
        opt_state=opt_state,
        rng=jax.random.PRNGKey(step),
    )


def abstract() -> TrainState:
    return jax.eval_shape(lambda: state_at(0))


def assert_state_is(state, step: int):
    expected = state_at(step)
    assert jax.tree.structure(state) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def saved_steps(directory) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def run_steps(ckpt: Checkpointer, steps, *, force_last=False):
    results = {}
    for step in steps:
        results[step] = ckpt.save(step, state_at(step), {"step": step})
    if force_last:
        last = steps[-1]
        results[last] = ckpt.save(last, state_at(last), {"step": last}, force=True)
    return results


def test_interval_and_keep_are_honoured(tmp_path):
    """every=2, keep=3 over steps 1..11: saves at 2, 4, ..., 10 (and, orbax's initial-save
    policy, the first step of a directory without checkpoints), keeps the newest three; a
    forced save of the odd last step is kept too (the trainer's final save)."""
    ckpt = Checkpointer(tmp_path / "ck", every=2, keep=3)
    results = run_steps(ckpt, list(range(1, 12)))
    assert [s for s, saved in results.items() if saved] == [1, 2, 4, 6, 8, 10]
    ckpt.save(11, state_at(11), {"step": 11}, force=True)
    ckpt.close()
    assert saved_steps(tmp_path / "ck") == [8, 10, 11]


def test_resume_restores_the_newest_and_an_explicit_step_restores_that_step(tmp_path):
    first = Checkpointer(tmp_path / "ck", every=1, keep=4)
    run_steps(first, [1, 2, 3, 4, 5])
    first.close()
    assert saved_steps(tmp_path / "ck") == [2, 3, 4, 5]

    again = Checkpointer(tmp_path / "ck", every=1, keep=4)  # a new process resuming
    assert again.latest_step() == 5
    state, meta = again.restore(abstract())
    assert meta == {"step": 5}
    assert_state_is(state, 5)
    for step in (2, 4):  # an earlier, still kept step
        state, meta = again.restore(abstract(), step=step)
        assert meta == {"step": step}
        assert_state_is(state, step)
    with pytest.raises(FileNotFoundError):  # deleted by keep=4: never silently another step
        again.restore(abstract(), step=1)
    again.close()


def test_a_resumed_run_keeps_counting_from_its_checkpoints(tmp_path):
    """keep applies across restarts: old checkpoints are deleted as new ones arrive."""
    first = Checkpointer(tmp_path / "ck", every=3, keep=2)
    run_steps(first, list(range(1, 8)))  # saves 3, 6
    first.close()
    second = Checkpointer(tmp_path / "ck", every=3, keep=2)
    start = second.latest_step()
    assert start == 6
    saved = run_steps(second, list(range(start + 1, 13)))
    assert [s for s, ok in saved.items() if ok] == [9, 12]  # no initial save on resume
    second.close()
    assert saved_steps(tmp_path / "ck") == [9, 12]
    third = Checkpointer(tmp_path / "ck", every=3, keep=2)
    state, _ = third.restore(abstract())
    assert_state_is(state, 12)
    third.close()


@pytest.mark.slow
def test_trainer_keeps_several_and_resumes_from_the_newest(smoke_overrides, tmp_path):
    """Through the trainer: checkpoint_every=2, keep_checkpoints=3 over 6 steps keeps
    2, 4, 6 (the initial save of step 1 rotated out); rerunning to 8 steps restores 6."""
    common = [*smoke_overrides, "optimizer=adam", "trainer.checkpoint_every=2"]
    common += ["trainer.keep_checkpoints=3", "trainer.spectra_every=0"]
    run(compose_config([*common, "trainer.steps=6"]))
    run_dir = tmp_path / "run"
    assert saved_steps(run_dir / "checkpoints") == [2, 4, 6]
    final = run(compose_config([*common, "trainer.steps=8"]))
    assert final["step"] == 8
    resumed = [r["resumed_from_step"] for r in read_metrics(run_dir) if "resumed_from_step" in r]
    assert resumed == [6]
    assert saved_steps(run_dir / "checkpoints") == [4, 6, 8]
