"""``benchmarks/sharded_state.py`` at toy size: it runs on the 8 virtual devices of
``tests/conftest.py``, prints one row per N, and its per-device bytes are the shards'."""

import importlib.util
import math
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # six Sketchy compiles: 15-30 s on 2 cores
def test_sharded_state_benchmark_on_toy_shapes(capsys):
    if jax.device_count() < 2:
        pytest.skip("needs the host devices of tests/conftest.py")
    bench = load("sharded_state")
    rows = bench.main(["--sets", "toy", "--devices", "1", "2", "--cycles", "1", "--rank", "4"])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert table[0].startswith("| N | replicated MB/device") and len(table) == 3, out
    toy = rows["toy"]
    for n in (1, 2):
        for layout in ("replicated", "sharded", "split"):
            r = toy[n][layout]
            assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("steady_ms", "refresh_ms"))
    # One device: the layouts hold the same bytes. Two: each device holds about half (the
    # 16 x 8 matrix's factors, graft and momentum and the bias are split; the scalar
    # counters and each factor's 4 eigenvalues and its tail stay whole).
    assert toy[1]["sharded"]["bytes"] == toy[1]["replicated"]["bytes"]
    assert toy[2]["replicated"]["bytes"] == toy[1]["replicated"]["bytes"]
    assert toy[2]["sharded"]["bytes"] < 0.52 * toy[2]["replicated"]["bytes"]
    assert toy[2]["split"]["bytes"] == toy[2]["sharded"]["bytes"]  # same state layout
