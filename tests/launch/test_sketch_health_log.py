"""The trainer's sketch-health glue (launch/sketch_health_log.py): one warning per run when
the worst sketched factor keeps losing mass, none when the rank is adequate."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compose_config

import sketchy
from launch.errors import UserError
from launch.metrics_log import read_metrics
from launch.sketch_health_log import SketchHealth
from launch.train import run
from launch.validation import check_config

PARAMS = {"bias": jnp.zeros(12), "w": jnp.zeros((16, 12))}


def checks(rank, grad_rank, n_checks=6, **kw):
    """``n_checks`` steps of gradients of rank ``grad_rank`` (a fixed subspace), each
    followed by a health check; returns the monitor and the summaries."""
    tx = sketchy.sketchy(1e-3, rank=rank, update_freq=1)
    health = SketchHealth(tx, PARAMS, **kw)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((16, grad_rank)), rng.standard_normal((grad_rank, 12))
    state, out = tx.init(PARAMS), []
    for step in range(1, n_checks + 1):
        g = a @ np.diag(rng.standard_normal(grad_rank)) @ b
        grads = {"bias": jnp.asarray(rng.standard_normal(12)), "w": jnp.asarray(g)}
        _, state = tx.update(grads, state, PARAMS)
        out.append(health(state, step))
    return health, out


def warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "sketch health" in line]


def test_a_too_small_rank_warns_once_after_patience_checks(capsys):
    health, out = checks(rank=2, grad_rank=12, threshold=0.3, patience=3)
    assert all(o["escaped_share_max"] > 0.3 for o in out)  # above threshold at every check
    assert all(o["escaped_share_max_path"] == "['w']" for o in out)
    lines = warnings(capsys)
    assert len(lines) == 1 and health.warned
    assert lines[0].startswith("warning: step 3: sketch health: a factor of ['w']")
    d = int(out[2]["escaped_share_max_dim"])
    assert f"{out[2]['escaped_share_max']:.1%}" in lines[0]
    assert f"try rank=4 (rank >= {d} makes this factor's sketch exact)" in lines[0]


def test_patience_counts_checks_in_a_row_and_threshold_one_never_warns(capsys):
    checks(rank=2, grad_rank=12, threshold=0.3, patience=7)  # 6 checks < 7
    checks(rank=2, grad_rank=12, threshold=1.0, patience=1)
    assert warnings(capsys) == []


def test_an_adequate_rank_does_not_warn(capsys):
    """Rank-3 gradients, rank-4 sketches: nothing escapes (share ~0)."""
    _, out = checks(rank=4, grad_rank=3, threshold=0.01, patience=1)
    assert max(o["escaped_share_max"] for o in out) < 1e-5
    assert warnings(capsys) == []


def test_replay_restores_the_streak_and_the_warning_without_printing(capsys):
    tx = sketchy.sketchy(1e-3, rank=2, update_freq=1)
    health = SketchHealth(tx, PARAMS, threshold=0.3, patience=3)
    health.replay([0.9, 0.1, 0.9, 0.9])  # the 0.1 broke the first streak
    assert (health.streak, health.warned) == (2, False) and warnings(capsys) == []
    health.replay([0.9])
    assert health.warned and warnings(capsys) == []  # warned before: not again


def test_no_sketches_no_probe_no_summary():
    health = SketchHealth(sketchy.shampoo(1e-3), PARAMS)
    assert health.owners is None and health(None, 1) == {}


@pytest.mark.parametrize(
    ("key", "value"), [("threshold", 0.0), ("threshold", 1.5), ("patience", 0), ("patience", 1.5)]
)
def test_bad_settings_are_refused(key, value):
    cfg = {"seed": 0, "trainer": {"steps": 1, "batch_size": 1, "eval_batch_size": 1}}
    cfg["trainer"]["sketch_health"] = {key: value}
    with pytest.raises(UserError, match=f"trainer.sketch_health.{key}"):
        check_config(cfg)


def test_a_tiny_run_logs_the_summary_and_warns_once(smoke_overrides, tmp_path, capsys):
    """ogbg_molpcba tiny, Sketchy rank 2, a check every step: the summary is in the metrics
    log beside the spectra (the worst factor's path as a string), and one warning line."""
    overrides = [*smoke_overrides, "optimizer=sketchy", "rank=2", "trainer.spectra_every=1"]
    overrides += ["trainer.sketch_health.threshold=0.05", "trainer.sketch_health.patience=2"]
    run(compose_config(overrides))
    rows = [r for r in read_metrics(tmp_path / "run") if "spectra/escaped_share_max" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert 0 <= r["spectra/escaped_share_mean"] <= r["spectra/escaped_share_max"] < 1
        assert 0 <= r["spectra/tail_over_lambda_max_max"] < 1
        assert r["spectra/escaped_share_max_path"].startswith("['")
    lines = warnings(capsys)
    assert len(lines) == 1, lines
    assert "try rank=4" in lines[0] and rows[-1]["spectra/escaped_share_max_path"] in lines[0]
    assert rows[-1]["spectra/escaped_share_max"] > 0.05
    # Resumed for two more steps: the run has warned already (read back from its log).
    run(compose_config([*overrides, "trainer.steps=8"]))
    rows = [r for r in read_metrics(tmp_path / "run") if "spectra/escaped_share_max" in r]
    assert [r["step"] for r in rows][-2:] == [7, 8] and rows[-1]["spectra/escaped_share_max"] > 0.05
    assert warnings(capsys) == []
