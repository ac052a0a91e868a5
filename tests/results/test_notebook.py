"""``notebooks/explore_run.ipynb``: executed on fixture records; committed without outputs."""

import json
import math
import statistics
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "explore_run.ipynb"
EXPERIMENT = "fig3_spectra_fixture"
MAP = "validation/mean_average_precision"
KERNEL = "sketchy-test-python"
# optimizer -> {seed: final validation mAP}
FINALS = {"shampoo": {0: 0.50, 1: 0.54, 2: 0.55}, "sketchy": {0: 0.60, 1: 0.58}}
WORDS = {  # words per parameter by category, as the trainer logs them at step 0
    "adam": {"statistics": 0.0, "preconditioners": 0.0, "grafting": 1.0, "momentum": 1.0},
    "shampoo": {"statistics": 1.9, "preconditioners": 1.9, "grafting": 1.0, "momentum": 1.0},
    "sketchy": {"statistics": 0.4, "preconditioners": 0.0, "grafting": 1.0, "momentum": 1.0},
}
NULL = {1: 300.5, 64: 850.25}  # fixture null-baseline intrinsic dimensions (not the paper's)
STEPS = 400


def _spectra(optimizer: str, seed: int) -> dict[str, list[list[float]]]:
    """Spectra every 50 steps: intrinsic dimension rising, top-64 share falling."""
    steps = range(50, STEPS + 1, 50)
    base = 20.0 if optimizer == "shampoo" else 12.0
    dim = [[s, base + seed + s / 100] for s in steps]
    curves = {
        "spectra/num_factors": [[s, 24.0] for s in steps],
        "spectra/top64_share_mean": [[s, 0.95 - 0.1 * s / STEPS - 0.01 * seed] for s in steps],
        "spectra/intrinsic_dim_mean": dim,
        "spectra/intrinsic_dim_q25": [[s, 0.7 * v] for s, v in dim],
        "spectra/intrinsic_dim_q75": [[s, 1.4 * v] for s, v in dim],
    }
    if optimizer == "sketchy":
        curves["spectra/escaped_mass_mean"] = [[s, 1e-4 * (1 + s / 100 + seed)] for s in steps]
    return curves


def _record(optimizer: str, seed: int, final: float) -> dict:
    train = [[s, 0.7 * math.exp(-s / 150) + 0.05 + 0.01 * seed] for s in range(10, STEPS + 1, 10)]
    val = [[s, final - 0.1 * (STEPS - s) / STEPS] for s in range(100, STEPS + 1, 100)]
    words = WORDS[optimizer] | {"other": 0.0}
    words["total"] = sum(words.values())
    curves = {
        "train/loss": train,
        "train/grad_norm": [[s, 0.3 / (1 + s / 100)] for s, _ in train],
        "validation/loss": [[s, 0.2 - v / 10] for s, v in val],
        MAP: val,
        "model/num_params": [[0, 158400]],
        **{f"optimizer/bytes_per_param_{k}": [[0, v]] for k, v in words.items()},
        **_spectra(optimizer, seed),
    }
    return {
        "config": {
            "choices": {"optimizer": optimizer, "workload": "ogbg_molpcba"},
            "optimizer": {"learning_rate": 1e-3},
            "workload": {"size": "tiny", "data": "mini"},
            "trainer": {"steps": STEPS, "batch_size": 64, "objective": MAP, "spectra_top_k": 64},
            "seed": seed,
            "record_name": f"{optimizer}_seed{seed}",
        },
        "final": {"step": STEPS, MAP: final, "test/mean_average_precision": final - 0.02},
        "curves": curves,
        "train_seconds": 40.0 + seed,
        "time_to_target": {MAP: {"target": 0.5, "step": 300, "train_seconds": 30.0}},
        "hardware": {"platform": "cpu", "device_count": 1},
    }


def _null_record(d: int, value: float) -> dict:
    config = {"b2": 0.999, "d": d, "dim": 1024, "draws": 10_000, "seed": 0, "top_k": 256}
    return {
        "config": config | {"trials": 20, "workers": 2},
        "summary": {
            "intrinsic_dim": {"mean": value, "ci95": 0.5, "se": 0.25, "n": 20},
            "trace": {"mean": 1024.0 * d * 1000},
            "top_k_share": {"mean": 0.4},
        },
        "theory": {"intrinsic_dim": value - 1.0, "expected_trace": 1024.0 * d * 1000},
        "wall_time_s": 12.0,
        "hardware": {"cpu": "x86_64", "cpu_count": 2},
    }


@pytest.fixture
def records(tmp_path: Path) -> Path:
    root = tmp_path / "records"
    runs = {(opt, seed): final for opt, seeds in FINALS.items() for seed, final in seeds.items()}
    for (opt, seed), final in runs.items():
        _write(root / EXPERIMENT / f"{opt}_seed{seed}.json", _record(opt, seed, final))
    # Same prefix, another experiment: must not be mixed in.
    _write(root / f"{EXPERIMENT}_tuning" / "adam_seed0.json", _record("adam", 0, 0.1))
    for d, value in NULL.items():
        _write(root / "fig3_null_baseline" / f"d{d}.json", _null_record(d, value))
    return root


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def _execute(tmp_path: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run the notebook in a kernel of this interpreter, with Jupyter's state in tmp_path."""
    for var, sub in [
        ("IPYTHONDIR", "ipython"),
        ("JUPYTER_CONFIG_DIR", "jupyter_config"),
        ("JUPYTER_DATA_DIR", "jupyter_data"),
        ("JUPYTER_RUNTIME_DIR", "jupyter_runtime"),
    ]:
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sketchy test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    km = AsyncKernelManager(
        kernel_name=KERNEL,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)]),
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        km=km,
        timeout=180,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # the cwd Jupyter would use
    )
    client.execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def test_notebook_explores_fixture_records(records, tmp_path, monkeypatch):
    monkeypatch.setenv("SKETCHY_RECORDS_DIR", str(records))
    monkeypatch.setenv("SKETCHY_EXPERIMENT", EXPERIMENT)
    nb = _execute(tmp_path, monkeypatch)
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]

    # The last cell prints the summary as JSON.
    last = nb.cells[-1]
    summary = json.loads("".join(o.text for o in last.outputs if o.output_type == "stream"))
    assert summary["experiment"] == EXPERIMENT
    assert summary["records"] == 5  # the `_tuning` experiment's record is not among them
    assert summary["objective"] == MAP
    assert set(summary["optimizers"]) == set(FINALS)
    for opt, seeds in FINALS.items():
        got = summary["optimizers"][opt]
        values = list(seeds.values())
        n = len(values)
        assert got["seeds"] == sorted(seeds)
        assert got["objective_n"] == n
        assert got["objective_mean"] == pytest.approx(statistics.mean(values))
        ci = 1.96 * statistics.stdev(values) / math.sqrt(n)
        assert got["objective_ci95"] == pytest.approx(ci)
        lasts = [_spectra(opt, s) for s in seeds]
        assert got["top_k_share_key"] == "spectra/top64_share_mean"
        assert got["top_k_share_last"] == pytest.approx(
            statistics.mean(c["spectra/top64_share_mean"][-1][1] for c in lasts)
        )
        assert got["intrinsic_dim_last"] == pytest.approx(
            statistics.mean(c["spectra/intrinsic_dim_mean"][-1][1] for c in lasts)
        )
        assert got["words_per_param_total"] == pytest.approx(sum(WORDS[opt].values()))
    assert summary["optimizers"]["shampoo"]["escaped_mass_last"] is None
    assert summary["optimizers"]["sketchy"]["escaped_mass_last"] == pytest.approx(
        statistics.mean(1e-4 * (1 + STEPS / 100 + s) for s in FINALS["sketchy"])
    )
    # Fig. 3's null baseline comes from the fixture's records, not the paper's fallback.
    assert sorted(summary["null_baseline"].values()) == sorted(NULL.values())

    # Figures: curves, spectra, memory; and the null-baseline table from the fixture.
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 3
    tables = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any("**300.50 +- 0.50**" in t for t in tables)


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], cell.source[:80]
        assert cell.execution_count is None, cell.source[:80]
        assert "execution" not in cell.metadata, cell.source[:80]  # nbclient's timings
    # The first code cell is where the records are chosen (and a test overrides them).
    assert "SKETCHY_RECORDS_DIR" in code[0].source and "SKETCHY_EXPERIMENT" in code[0].source
