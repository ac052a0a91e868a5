"""Fig. 2 (quality, time to target, tuning) and the rank ablation, on hand-made records."""

import json

import pytest

from results.plots import fig2_quality, rank_ablation
from results.plots.common import mean_ci

MAP = "validation/mean_average_precision"


def _record(optimizer, seed, val, test, *, lr=1e-3, name=None, curve=None, words=None):
    curve = curve or [[250, val - 0.1], [500, val]]
    curves = {MAP: curve, "perf/train_seconds": [[0, 0.0], [500, 100.0]]}
    if words is not None:
        curves["optimizer/bytes_per_param_statistics"] = [[0, words]]
        curves["optimizer/bytes_per_param_preconditioners"] = [[0, 0.5]]
    return {
        "config": {
            "choices": {"optimizer": optimizer, "workload": "ogbg_molpcba"},
            "optimizer": {"learning_rate": lr},
            "workload": {"size": "paper", "data": "mini"},
            "trainer": {"steps": 500, "batch_size": 64, "objective": MAP},
            "seed": seed,
            "record_name": name or f"{optimizer}_seed{seed}",
        },
        "final": {MAP: val, "test/mean_average_precision": test},
        "curves": curves,
        "hardware": {"platform": "cpu", "device_count": 1},
        "targets": {MAP: 0.28098},
    }


def _write(folder, name, record):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(record))


@pytest.fixture
def records(tmp_path):
    root = tmp_path / "records"
    exp = root / "fig2_ogbg_molpcba_mini"
    for seed, (val, test) in enumerate([(0.50, 0.40), (0.52, 0.44)]):
        _write(exp, f"adam_seed{seed}", _record("adam", seed, val, test))
    # Sketchy reaches Adam's worst final validation (0.50) at its first evaluation.
    for seed, (val, test) in enumerate([(0.60, 0.50), (0.62, 0.52), (0.64, 0.54)]):
        rec = _record("sketchy", seed, val, test, curve=[[250, 0.55], [500, val]])
        _write(exp, f"sketchy_seed{seed}", rec)
    # The same seed recorded twice (an old file name): counted once.
    _write(exp, "sketchy_seed2_old", _record("sketchy", 2, 0.64, 0.54))
    tuning = root / "fig2_ogbg_molpcba_mini_tuning"
    for lr, val in [(3e-4, 0.40), (1e-3, 0.50), (3e-3, float("nan"))]:
        _write(tuning, f"adam_lr{lr}_seed100", _record("adam", 100, val, val, lr=lr))
    for lr, val in [(1e-3, 0.55), (3e-3, 0.60)]:
        _write(tuning, f"sketchy_lr{lr}_seed100", _record("sketchy", 100, val, val, lr=lr))
    return root


def test_fig2_table_has_errors_seeds_time_to_target_and_tuning(records, tmp_path):
    paths = fig2_quality.make(records, tmp_path / "out")
    assert {p.name for p in paths} == {"fig2_quality.md", "fig2_quality.png"}
    table = (tmp_path / "out" / "tables" / "fig2_quality.md").read_text()
    _, ci, _ = mean_ci([0.60, 0.56])
    adam = next(line for line in table.splitlines() if "| adam |" in line)
    assert f"1 - mAP {0.58:.4f} +- {ci:.4f} | 2 |" in adam
    assert "mean_average_precision 0.5000 | 2/2 | 500 | 100 |" in adam
    sketchy = next(line for line in table.splitlines() if "| sketchy | 0.001 |" in line)
    assert "| 3 |" in sketchy  # three distinct seeds, not four files
    assert "| 3/3 | 250 | 50 |" in sketchy  # interpolated training seconds at step 250
    assert "target from the worst final value of the 2 Adam seeds" in table
    assert (
        "| adam | validation/mean_average_precision | 0.0003: 0.4000; **0.001: 0.5000**; "
        "0.003: diverged | 0.001 (inside the grid) |" in table
    )
    assert "**0.003: 0.6000** | 0.003 (ON AN EDGE of the grid) |" in table


def test_fig2_uses_algoperf_targets_at_paper_scale(records, tmp_path):
    exp = records / "fig2_ogbg_molpcba"
    rec = _record("sketchy", 0, 0.30, 0.29, curve=[[250, 0.2], [500, 0.30]])
    rec["config"]["workload"]["data"] = "tfds"
    _write(exp, "sketchy_seed0", rec)
    fig2_quality.make(records, tmp_path / "out")
    table = (tmp_path / "out" / "tables" / "fig2_quality.md").read_text()
    assert "fig2_ogbg_molpcba: target from AlgoPerf |" in table
    line = next(x for x in table.splitlines() if x.startswith("| fig2_ogbg_molpcba (tfds"))
    assert "mean_average_precision 0.2810 | 1/1 | 500 | 100 |" in line


def test_rank_ablation_table_and_pareto_plot(tmp_path):
    root = tmp_path / "records"
    exp = root / "rank_ablation_ogbg_molpcba_mini"
    for rank, words, test in [(4, 0.1, 0.30), (16, 0.3, 0.35), (128, 1.0, 0.40)]:
        for seed in (0, 1):
            name = f"sketchy_rank{rank}_seed{seed}"
            rec = _record("sketchy", seed, 0.5, test + 0.01 * seed, name=name, words=words)
            _write(exp, name, rec)
    rec = _record("shampoo", 0, 0.5, 0.41, name="shampoo_subsampled_seed0", words=4.0)
    _write(exp, "shampoo_subsampled_seed0", rec)
    paths = rank_ablation.make(root, tmp_path / "out")
    assert {p.name for p in paths} == {"rank_ablation.md", "rank_ablation.png"}
    table = (tmp_path / "out" / "tables" / "rank_ablation.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| rank_ablation")]
    assert [r.split(" | ")[1] for r in rows] == [
        "sketchy_rank4",
        "sketchy_rank16",
        "sketchy_rank128",
        "shampoo_subsampled",
    ]
    _, ci, _ = mean_ci([0.70, 0.69])
    assert f"1 - mAP {0.695:.4f} +- {ci:.4f}" in rows[0] and rows[0].endswith("| 2 | 0.600 |")
    assert rows[3].endswith("| 1 | 4.500 |")


def test_rank_auto_series_reads_memory_after_the_switch(tmp_path):
    """A rank_auto record logs its warm-up memory first and its allocated memory at the
    switch: the table uses the last value, and lists the chosen ranks per factor beside
    their intrinsic dimensions (with the rank correlation), after every row of the main
    table (a table in between would cut it)."""
    root = tmp_path / "records"
    for exp_name in ("rank_auto_imagenet_mini", "rank_auto_ogbg_molpcba_mini"):
        exp = root / exp_name
        for seed in (0, 1):
            name = f"sketchy_auto16_seed{seed}"
            rec = _record("sketchy", seed, 0.5, 0.30, name=name, words=4.0)
            rec["curves"]["optimizer/bytes_per_param_statistics"].append([200, 0.25])
            rec["rank_auto"] = {
                "step": 200,
                "ranks": {"['w'] axis 0": 12, "['w'] axis 1": 3, "['v'] axis 0": 7},
                "intrinsic_dims": {"['w'] axis 0": 20.0, "['w'] axis 1": 2.5, "['v'] axis 0": 9.0},
                "budget_words": 1000,
                "used_words": 990,
                "captured_share": 1.5,
            }
            _write(exp, name, rec)
    rank_ablation.make(root, tmp_path / "out")
    table = (tmp_path / "out" / "tables" / "rank_ablation.md").read_text().splitlines()
    rows = [i for i, x in enumerate(table) if x.startswith("| rank_auto_")]
    assert len(rows) == 2 and rows[1] == rows[0] + 1, table  # one main table, unbroken
    assert table[rows[0]].endswith("| 2 | 0.750 |"), table[rows[0]]  # 0.25 stats + 0.5 precond
    assert "| `['w'] axis 0` | 12 | 20.0 |" in table and "| used_words | 990 | |" in table
    assert "| captured_share | 0.500 | |" in table  # the record's sum over 3 factors, 1.5
    assert "| Spearman (rank, intrinsic dim.) | 1.00 | |" in table  # same order: 3 < 7 < 12
