"""Test-wide settings: CPU only, W&B disabled, several virtual devices for mesh tests."""

import os
import tempfile

import pytest

# Must happen before jax initializes its backends (tests that build a mesh use 8 devices).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# OpenBLAS (JAX's CPU LAPACK) busy-waits; with two pytest workers on two cores its threads
# would make every eigh/SVD 10-100x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()
# A persistent compilation cache shared by the tests of one machine: runs that compile the
# same step (resume tests run one config two or three times) reuse it instead of paying
# XLA's compile again; a ResNet or Conformer step costs tens of seconds on 2 cores.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "sketchy-test-jax-cache")
)


@pytest.fixture(autouse=True)
def _figures_never_read_live_records(request, monkeypatch, tmp_path_factory):
    """Figure tests (tests/results/) read fixture records only: ``results/records/`` changes
    with every ``make reproduce`` (and other sessions write to it), so a test that read it
    would test whatever happens to be there. ``make_figures.main()`` without arguments
    reads it and writes into ``results/``: here its defaults point into a temp dir."""
    if request.node.path.parent.name != "results":
        return
    from results import make_figures

    empty = tmp_path_factory.mktemp("no-live-records")
    monkeypatch.setattr(make_figures, "RECORDS", empty)
    monkeypatch.setattr(make_figures.main, "__defaults__", (empty / "out", empty))
    monkeypatch.setenv("SKETCHY_RECORDS_DIR", str(empty))
