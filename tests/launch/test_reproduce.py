"""`make reproduce` (launch/reproduce.py): tuning with grid extension past an edge, tuned
values carried to the final and `tuned_from` runs, skipping recorded runs, one real plan."""

import json

import pytest
from conftest import MINI_MOLECULES
from omegaconf import OmegaConf

from launch import reproduce
from launch.reproduce import plan_runs, tuning_run, tuning_state

MAP = "validation/mean_average_precision"


def _study(**tune):
    return {
        "name": "s",
        "experiment": "fig2_ogbg_molpcba_mini",
        "optimizers": ["adam"],
        "tune": {"param": "optimizer.learning_rate", "grid": [1e-3, 3e-3, 9e-3], "seed": 100}
        | tune,
        "seeds": [0, 1],
    }


def _record(records, study, lr, score, metric=MAP, optimizer="adam"):
    path = tuning_run(study, optimizer, lr).record(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"config": {"trainer": {"objective": metric}}, "final": {metric: score}}
    path.write_text(json.dumps(rec))


def test_untuned_grid_is_all_pending(tmp_path):
    pending, state = tuning_state(_study(), "adam", tmp_path)
    assert pending == [1e-3, 3e-3, 9e-3] and state["best"] is None


def test_best_inside_the_grid_ends_tuning(tmp_path):
    study = _study(max_extensions=2)
    for lr, score in [(1e-3, 0.4), (3e-3, 0.5), (9e-3, 0.45)]:
        _record(tmp_path, study, lr, score)
    assert tuning_state(study, "adam", tmp_path) == (
        [],
        {"values": [1e-3, 3e-3, 9e-3], "best": 3e-3, "on_edge": False},
    )


def test_best_on_an_edge_extends_the_grid_by_its_ratio(tmp_path):
    study = _study(max_extensions=2)
    for lr, score in [(1e-3, 0.4), (3e-3, 0.5), (9e-3, 0.6)]:
        _record(tmp_path, study, lr, score)
    pending, _ = tuning_state(study, "adam", tmp_path)
    assert pending == [pytest.approx(0.027)]
    _record(tmp_path, study, pending[0], 0.55)
    pending, state = tuning_state(study, "adam", tmp_path)
    assert pending == [] and state["best"] == 9e-3 and not state["on_edge"]


def test_extensions_are_bounded_and_an_edge_is_reported(tmp_path):
    study = _study(max_extensions=1)
    for lr, score in [(1e-3, 0.6), (3e-3, 0.5), (9e-3, 0.4)]:
        _record(tmp_path, study, lr, score)
    (lower,) = tuning_state(study, "adam", tmp_path)[0]
    assert lower == pytest.approx(1e-3 / 3)
    _record(tmp_path, study, lower, 0.7)  # better still, but no extension is left
    pending, state = tuning_state(study, "adam", tmp_path)
    assert pending == [] and state["best"] == lower and state["on_edge"]


def test_lower_is_better_metrics_are_minimized(tmp_path):
    study = _study()
    for lr, wer in [(1e-3, 0.5), (3e-3, 0.3), (9e-3, 0.4)]:
        _record(tmp_path, study, lr, wer, metric="validation/wer")
    assert tuning_state(study, "adam", tmp_path)[1]["best"] == 3e-3


def test_final_and_borrowed_runs_use_the_tuned_value(tmp_path):
    study = _study()
    other = {
        "name": "t",
        "experiment": "rank_ablation_ogbg_molpcba_mini",
        "tuned_from": "s",
        "variants": {"adam_x": {"optimizer": "adam", "overrides": ["rank=4"]}},
        "seeds": [7],
    }
    plan = {"studies": [study, other]}
    assert [r for _, r, _ in plan_runs(plan, tmp_path)].count(None) == 3  # all wait for tuning
    for lr, score in [(1e-3, 0.4), (3e-3, 0.5), (9e-3, 0.45)]:
        _record(tmp_path, study, lr, score)
    runs = [(s, r) for s, r, note in plan_runs(plan, tmp_path) if note == "final"]
    assert [(s, r.record_name) for s, r in runs] == [
        ("s", "adam_seed0"),
        ("s", "adam_seed1"),
        ("t", "adam_x_seed7"),
    ]
    assert "optimizer.learning_rate=0.003" in runs[0][1].overrides
    assert runs[2][1].overrides == (
        "optimizer=adam",
        "rank=4",
        "optimizer.learning_rate=0.003",
        "seed=7",
    )


def test_list_totals_recorded_runs_and_hours(tmp_path, capsys):
    """``--list`` ends with runs recorded / known and the hours of their records, per
    study and in all (runs still waiting for tuning count as known, not recorded)."""
    study = _study()
    plan_path = tmp_path / "plan.yaml"
    OmegaConf.save(OmegaConf.create({"studies": [study]}), plan_path)
    for lr, score in [(1e-3, 0.4), (3e-3, 0.5)]:
        _record(tmp_path, study, lr, score)
    for lr in (1e-3, 3e-3):
        path = tuning_run(study, "adam", lr).record(tmp_path)
        path.write_text(json.dumps(json.loads(path.read_text()) | {"wall_time_s": 2700.0}))
    assert reproduce.main(["--plan", str(plan_path), "--records", str(tmp_path), "--list"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    # 3 tuning runs (the grid) + 2 seeds waiting; 2 recorded of 45 min each.
    assert out[-2:] == [
        "s: 2/5 recorded, 1.50 h",
        "total: 2/5 recorded, 1.50 h of recorded wall time",
    ]


def test_unknown_study_is_one_line_and_exit_2(tmp_path, capsys):
    assert reproduce.main(["--study", "nope", "--records", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown study 'nope'" in err[0] and "fig2_ogbg_molpcba_mini" in err[0]


def test_a_real_plan_runs_then_skips_what_is_recorded(tmp_path, data_dir, capsys):
    """One real training run through the plan runner (a subprocess per run, as `make
    reproduce` does): its record lands where the plan says, with the tuned value (from a
    tuning record written by hand here; the choice itself is tested above), and a second
    pass runs nothing. (The planner in-process: each pass of `reproduce.main`.)"""
    overrides = [
        "debug=smoke",
        f"workload.data_dir={data_dir}",
        f"workload.max_molecules={MINI_MOLECULES}",
        "trainer.final_splits=[validation,test]",
    ]
    study = {
        "name": "tiny",
        "experiment": "fig2_ogbg_molpcba_mini",
        "overrides": overrides,
        "optimizers": ["adam"],
        "tune": {"param": "optimizer.learning_rate", "grid": [3e-4, 1e-3, 3e-3], "seed": 100},
        "seeds": [0],
    }
    plan_path = tmp_path / "plan.yaml"
    OmegaConf.save(OmegaConf.create({"studies": [study]}), plan_path)
    records, runs = tmp_path / "records", tmp_path / "runs"
    for lr, score in [(3e-4, 0.03), (1e-3, 0.05), (3e-3, 0.04)]:  # best inside the grid
        _record(records, study, lr, score)
    argv = ["--plan", str(plan_path), "--records", str(records), "--runs", str(runs)]
    assert reproduce.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("running...") == 1 and "tiny adam_seed0 (final)" in out
    final = records / "fig2_ogbg_molpcba_mini" / "adam_seed0.json"
    rec = json.loads(final.read_text())
    assert rec["config"]["seed"] == 0
    assert rec["config"]["optimizer"]["learning_rate"] == 1e-3
    assert rec["config"]["run_dir"] == str(runs / "fig2_ogbg_molpcba_mini" / "adam_seed0")
    assert "test/mean_average_precision" in rec["final"] and rec["train_seconds"] > 0
    assert reproduce.main(argv) == 0
    again = capsys.readouterr().out
    assert "running..." not in again and "nothing left to run (4 runs recorded)" in again
