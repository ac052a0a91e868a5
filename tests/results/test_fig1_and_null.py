"""Fig. 1 (optimizer memory) and Fig. 3's null baseline: the record scripts, their tables and
``make figures``' per-artifact report, on fixture records in ``tmp_path`` only."""

import hashlib
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from launch import memory_report, null_baseline
from results import make_figures
from results.plots import fig1_memory, fig3_null_baseline, fig3_spectra

F32, I32, BOOL = 4, 4, 1

# Hand counts at rank 256, block 1024, max_precond_dim 4096 (float32, 4 bytes a number):
# - w (2048, 512): 2048 > 1024 splits into 2 blocks of 1024: 2 blocks 1024 x 512;
# - conv (3, 3, 16, 32): 3*3*16 = 144 <= 1024 merge, 144*32 > 1024: one block 144 x 32;
# - conv3 (3, 3, 128, 128): 9*128 > 1024: a 9 x 128 x 128 tensor, one factor per dim;
#   the paper's fan-in x fan-out view is 1152 x 128 = 2 blocks of 576 x 128;
# - wide (5000, 8): a dim above 4096, graft-only here; the paper's view: 5 blocks 1000 x 8;
# - b (512,): a vector, graft-only.
SHAPES = {
    "w": (2048, 512),
    "conv": (3, 3, 16, 32),
    "conv3": (3, 3, 128, 128),
    "wide": (5000, 8),
    "b": (512,),
}
N = 2048 * 512 + 3 * 3 * 16 * 32 + 3 * 3 * 128 * 128 + 5000 * 8 + 512


def sk(d, k=256):  # sketch floats of one axis: U (d x k'), lam (k'), tail (1), k' = min(k, d)
    k = min(k, d)
    return d * k + k + 1


SQUARE_OURS = 2 * (1024**2 + 512**2) + (144**2 + 32**2) + (9**2 + 2 * 128**2)
SKETCH_OURS = 2 * (sk(1024) + sk(512)) + (sk(144) + sk(32)) + (sk(9) + 2 * sk(128))
SQUARE_PAPER = SQUARE_OURS - (9**2 + 2 * 128**2) + 2 * (576**2 + 128**2) + 5 * (1000**2 + 8**2)
SKETCH_PAPER = (
    SKETCH_OURS - (sk(9) + 2 * sk(128)) + 2 * (sk(576) + sk(128)) + 5 * (sk(1000) + sk(8))
)
# Kronecker state counters (count, failures, nonfinite_steps) and optax.apply_if_finite's
# (notfinite_count, last_finite, total_notfinite); RMSProp graft: nu + an int32 count.
KRONECKER_OTHER = 3 * I32 + (I32 + BOOL + I32)


def small_params():
    return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in SHAPES.items()}


@pytest.fixture(scope="module")
def small_report():
    return memory_report.report(small_params(), rank=256, block_size=1024)


def test_memory_report_bytes_equal_hand_counts(small_report):
    r = small_report
    assert r["num_params"] == N
    opt = {name: o["bytes"] for name, o in r["optimizers"].items()}
    assert opt["adam"] == {
        "statistics": F32 * N, "preconditioners": 0, "grafting": 0, "momentum": F32 * N,
        "other": I32, "total": 2 * F32 * N + I32,
    }  # fmt: skip
    for name, square, pre in (("shampoo", SQUARE_OURS, True), ("sketchy", SKETCH_OURS, False)):
        expected = {
            "statistics": F32 * square,
            "preconditioners": F32 * square if pre else 0,
            "grafting": F32 * N + I32,
            "momentum": F32 * N,
            "other": KRONECKER_OTHER,
        }
        expected["total"] = sum(expected.values())
        assert opt[name] == expected, name
    words = r["optimizers"]["sketchy"]["words_per_param"]
    assert words["statistics"] == pytest.approx(SKETCH_OURS / N, rel=1e-12)
    assert words["grafting"] == pytest.approx(1 + 1 / N, rel=1e-12)


def test_memory_report_formulas_and_4x_check(small_report):
    r = small_report
    assert r["paper_formula"]["adam"]["statistics"] == N
    assert r["paper_formula"]["shampoo"] == {
        "statistics": SQUARE_PAPER, "preconditioners": SQUARE_PAPER,
        "second_moment_words_per_param": 2 * SQUARE_PAPER / N,
    }  # fmt: skip
    assert r["paper_formula"]["sketchy"]["statistics"] == SKETCH_PAPER
    assert r["block_formula"]["sketchy"]["statistics"] == SKETCH_OURS
    assert r["graft_only_matrices"] == [(5000, 8)]
    assert r["tensors_with_more_than_two_factors"] == [((3, 3, 128, 128), (9, 128, 128))]
    assert r["params_in_matrices"] == N - 512
    assert r["params_kronecker_preconditioned"] == N - 512 - 40000
    c = r["check_4x"]
    assert c["one_block"]["statistics_ratio"] == pytest.approx(1024**2 / (1024 * 256 + 257))
    assert c["one_block"]["with_roots_ratio"] == pytest.approx(2 * 1024**2 / (1024 * 256 + 257))
    assert c["model_measured"]["statistics_ratio"] == pytest.approx(SQUARE_OURS / SKETCH_OURS)
    assert c["model_paper_formula"]["with_roots_ratio"] == pytest.approx(
        2 * SQUARE_PAPER / SKETCH_PAPER
    )


class _Workload:
    """A stand-in workload: ``init`` returns the hand-counted parameters (and a state)."""

    def init(self, rng):
        del rng
        params = {k: jnp.zeros(s, jnp.bfloat16) for k, s in SHAPES.items()}  # recast to f32
        return params, {"batch_stats": {"mean": jnp.zeros(3)}}


def test_memory_report_cli_writes_one_record_per_model(tmp_path, monkeypatch):
    factory = lambda: (_Workload(), "tests._Workload", {"size": "x"})  # noqa: E731
    monkeypatch.setattr(memory_report, "MODELS", {"toy": ("toy model", factory)})
    [path] = memory_report.main(["--models", "toy", "--out", str(tmp_path)])
    record = json.loads(path.read_text())
    assert path.name == "toy.json" and record["model"] == "toy" and record["num_params"] == N
    assert record["workload"] == {"class": "tests._Workload", "kwargs": {"size": "x"}}
    assert record["optimizers"]["sketchy"]["bytes"]["statistics"] == F32 * SKETCH_OURS
    assert {"hardware", "versions", "wall_time_s"} <= set(record)


def _fixture_records(records, report):
    d = records / "fig1_memory"
    d.mkdir(parents=True)
    report = json.loads(json.dumps(report))  # as read back from JSON (tuples -> lists)
    for model in ("resnet50", "gnn"):
        rec = {"model": model, "description": f"fixture {model}", **report}
        (d / f"{model}.json").write_text(json.dumps(rec))
    return report


def test_fig1_table_shows_the_fixture_numbers(tmp_path, small_report):
    report = _fixture_records(tmp_path / "records", small_report)
    paths = fig1_memory.make(tmp_path / "records", tmp_path / "out")
    assert sorted(p.name for p in paths) == ["fig1_memory.md", "fig1_memory.png"]
    table = (tmp_path / "out" / "tables" / "fig1_memory.md").read_text()
    sketchy = report["optimizers"]["sketchy"]
    w = sketchy["words_per_param"]
    row = (
        f"| GNN | Sketchy | {w['statistics']:.3f} | 0.000 | {w['grafting']:.3f} "
        f"| {w['momentum']:.3f} | {w['other']:.3f} | **{w['total']:.3f}** "
        f"| {sketchy['bytes']['total'] / 2**20:,.1f} | {SKETCH_OURS / N:.3f} "
        f"| {SKETCH_PAPER / N:.3f} |"
    )
    assert row in table
    assert "| one full 1024 x 1024 block (1,048,576 vs 262,401 floats) | **4.00x** | 7.99x |" in (
        table
    )
    assert f"| ResNet-50, whole model, measured | {SQUARE_OURS / SKETCH_OURS:.2f}x |" in table
    assert "graft-only matrices: 5000 x 8" in table
    assert "3 x 3 x 128 x 128 as 9 x 128 x 128" in table
    assert table.index("| ResNet-50 | Adam") < table.index("| GNN | Adam")  # paper's order
    assert fig1_memory.missing_records(tmp_path / "records") == [
        "fig1_memory/conformer.json (python -m launch.memory_report --models conformer)"
    ]


def _analytic_tolerance(dim, trials_se):
    """Relative bias of the largest eigenvalue at finite ``dim`` is O(dim^(-2/3))
    (Tracy-Widom scale); allow that, plus 3 standard errors of the trial mean."""
    return dim ** (-2 / 3), 3 * trials_se


@pytest.mark.parametrize("d", [1, 64])
def test_null_baseline_at_reduced_size_matches_the_analytic_expectation(d):
    dim, draws, trials, b2 = 64, 500, 3, 0.999
    rec = null_baseline.record(dim, d, draws, trials, b2, seed=0)
    s = rec["summary"]
    # E tr C = dim d sum_i b2^i; Var tr C = 2 dim d sum_i b2^(2i) (chi-square per column).
    i = np.arange(draws)
    mean_tr, var_tr = dim * d * np.sum(b2**i), 2 * dim * d * np.sum(b2 ** (2 * i))
    assert rec["theory"]["expected_trace"] == pytest.approx(mean_tr, rel=1e-12)
    assert abs(s["trace"]["mean"] - mean_tr) < 4 * math.sqrt(var_tr / trials)
    rel, se = _analytic_tolerance(dim, s["intrinsic_dim"]["se"])
    predicted = rec["theory"]["intrinsic_dim"]
    assert abs(s["intrinsic_dim"]["mean"] - predicted) <= rel * predicted + se
    assert s["intrinsic_dim"]["ci95"] == pytest.approx(1.96 * s["intrinsic_dim"]["se"])
    per_trial = [t["trace"] / t["lambda_max"] for t in rec["trials"]]
    assert s["intrinsic_dim"]["mean"] == pytest.approx(np.mean(per_trial))
    assert 1 <= min(per_trial) and max(per_trial) <= dim


def test_spectrum_edge_is_marchenko_pasturs_for_equal_weights():
    # b2 = 1: C is Wishart(dim, N = draws d); its edge is (sqrt(N) + sqrt(dim))^2.
    dim, d, draws = 64, 2, 500
    edge = null_baseline.spectrum_edge(dim, d, draws, 1.0)
    assert edge == pytest.approx((math.sqrt(draws * d) + math.sqrt(dim)) ** 2, rel=1e-6)


def test_null_baseline_is_deterministic_in_the_seed_not_the_workers():
    a = null_baseline.simulate(32, 4, 100, 3, 0.99, seed=5, workers=1)
    b = null_baseline.simulate(32, 4, 100, 3, 0.99, seed=5, workers=2)
    c = null_baseline.simulate(32, 4, 100, 3, 0.99, seed=6, workers=1)
    assert a == b and a != c


def _null_fixture(records, d, **config):
    rec = null_baseline.record(32, d, 200, 3, 0.999, seed=0)
    rec["config"] |= config
    (records / "fig3_null_baseline").mkdir(parents=True, exist_ok=True)
    (records / "fig3_null_baseline" / f"d{d}.json").write_text(json.dumps(rec))
    return rec


def test_null_baseline_cli_writes_a_record_per_d(tmp_path):
    paths = null_baseline.main(
        ["--dim", "32", "--draws", "100", "--trials", "2", "--d", "1", "4", "--out", str(tmp_path)]
    )
    assert [p.name for p in paths] == ["d1.json", "d4.json"]
    rec = json.loads(paths[1].read_text())
    assert rec["config"]["d"] == 4 and len(rec["trials"]) == 2 and rec["wall_time_s"] >= 0


def test_null_table_puts_the_paper_beside_paper_size_records_only(tmp_path):
    records = tmp_path / "records"
    small = _null_fixture(records, 1)
    # A record relabelled as paper-sized (the table only reads the config).
    big = _null_fixture(records, 64, dim=1024, draws=10_000, b2=0.999)
    [path] = fig3_null_baseline.make(records, tmp_path / "out")
    table = path.read_text()
    s1, s64 = small["summary"]["intrinsic_dim"], big["summary"]["intrinsic_dim"]
    assert f"| 1 | **{s1['mean']:.2f} +- {s1['ci95']:.2f}** | - | - | - |" in table
    z = (s64["mean"] - 862.13) / math.hypot(s64["se"], 0.25)
    assert f"| {s64['mean'] - 862.13:+.2f} ({z:+.1f}) |" in table
    assert (
        f"| 64 | **{s64['mean']:.2f} +- {s64['ci95']:.2f}** | 862.13 (0.25) | 862.13 +- 0.49 |"
        in (table)
    )
    assert f"{big['theory']['intrinsic_dim']:.2f}" in table
    assert fig3_null_baseline.missing_records(records) == []
    lines = fig3_spectra.null_lines(records)
    assert list(lines.values()) == [s1["mean"], s64["mean"]]
    assert all("(ours)" in k for k in lines)
    assert all("(paper)" in k for k in fig3_spectra.null_lines(tmp_path / "empty"))


def _digest(out):
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_make_figures_reports_each_artifact_and_is_deterministic(tmp_path, small_report, capsys):
    records = tmp_path / "records"
    _fixture_records(records, small_report)
    _null_fixture(records, 1)
    first = make_figures.main(tmp_path / "a", records)
    lines = capsys.readouterr().out.splitlines()
    make_figures.main(tmp_path / "b", records)
    by_name = {line.split(":", 1)[0]: line for line in lines}
    assert by_name["fig1_memory"] == (
        "fig1_memory: written: figures/fig1_memory.png, tables/fig1_memory.md; missing: "
        "fig1_memory/conformer.json (python -m launch.memory_report --models conformer)"
    )
    assert by_name["fig3_null_baseline"].startswith(
        "fig3_null_baseline: written: tables/fig3_null_baseline.md; missing: "
        "fig3_null_baseline/d64.json (python -m launch.null_baseline --d 64)"
    )
    assert by_name["fig3_spectra"].startswith(
        "fig3_spectra: skipped: missing fig3_spectra_ogbg_molpcba_mini/shampoo_seed0.json "
        "(python -m launch.reproduce --study fig3_spectra_ogbg_molpcba_mini)"
    )
    assert by_name["rank_ablation"].startswith(
        "rank_ablation: skipped: missing rank_ablation_*/*.json (make reproduce"
    )
    assert by_name["fig2_quality"].startswith("fig2_quality: skipped: missing fig2_*/*.json")
    assert {p.name for p in first} == {"fig1_memory.png", "fig1_memory.md", "fig3_null_baseline.md"}
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def _spectra_record(share, idim, dim, first_layer=None):
    """A Fig. 3 run record: curves every 100 steps of a 300-step Shampoo run."""
    steps = [100, 200, 300]
    curves = {
        "spectra/num_factors": [[s, 6.0] for s in steps],
        "spectra/top16_share_mean": [[s, v] for s, v in zip(steps, share, strict=True)],
        "spectra/intrinsic_dim_mean": [[s, v] for s, v in zip(steps, idim, strict=True)],
        "spectra/intrinsic_dim_q25": [[s, 0.5 * v] for s, v in zip(steps, idim, strict=True)],
        "spectra/intrinsic_dim_q75": [[s, 2.0 * v] for s, v in zip(steps, idim, strict=True)],
        "spectra/dim_mean": [[s, dim] for s in steps],
    }
    if first_layer:
        curves["spectra/first_layer_top_quarter_share"] = [
            [s, v] for s, v in zip(steps, first_layer, strict=True)
        ]
    config = {
        "seed": 0,
        "trainer": {"steps": 300, "spectra_top_k": 16},
        "optimizer": {"learning_rate": 1e-3, "b2": 0.999},
    }
    return {"config": config, "curves": curves, "final": {}}


def test_fig3_spectra_table_checks_the_paper_statements(tmp_path):
    records = tmp_path / "records"
    runs = {
        # share stays above 0.8; intrinsic dim at most 6 of 64 (9.4% < 10.3%): both hold
        "fig3_spectra_ogbg_molpcba_mini": _spectra_record([0.95, 0.9, 0.85], [2, 4, 6], 64),
        # share dips to 0.7 (first layer's, preferred over the mean); idim 20 of 128 (15.6%)
        "fig3_spectra_imagenet_mini": _spectra_record(
            [0.99, 0.98, 0.97], [5, 20, 10], 128, first_layer=[0.9, 0.7, 0.8]
        ),
    }
    for exp, rec in runs.items():
        (records / exp).mkdir(parents=True)
        (records / exp / "shampoo_seed0.json").write_text(json.dumps(rec))
    assert fig3_spectra.missing_records(records) == [
        "fig3_spectra_librispeech_mini/shampoo_seed0.json (python -m launch.reproduce "
        "--study fig3_spectra_librispeech_mini)"
    ]
    paths = fig3_spectra.make(records, tmp_path / "out")
    assert {p.name for p in paths} == {"fig3_spectra.png", "fig3_spectra.md"}
    text = (tmp_path / "out" / "tables" / "fig3_spectra.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    ogbg, img = rows["fig3_spectra_ogbg_molpcba_mini"], rows["fig3_spectra_imagenet_mini"]
    assert "0.950 -> 0.850 (min 0.850; mean over factors)" in ogbg
    assert "2.00 -> 6.00 (max 6.00; IQR at end 3.00-12.00)" in ogbg
    assert ogbg.endswith("| 0.094 |")
    assert "0.900 -> 0.800 (min 0.700; first layer, top quarter)" in img
    assert img.endswith("| 0.156 |")
    assert "holds in 1 of 2 runs (our k" in text  # the share statement
    assert "of the dimension) | holds in 1 of 2 runs |" in text  # the intrinsic-dim statement
