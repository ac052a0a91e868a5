"""Accelerator installs (``make venv ACCEL=cuda12|tpu``), checked offline: the pins are exact,
agree with ``requirements.txt``, name no package index, and ``make`` installs them beside the
CPU requirements. Whether they resolve on the package index is ``make accel-check``."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCELS = {"cuda12": "jax-cuda12-plugin", "tpu": "libtpu"}
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)$")


def pins(path: Path) -> dict[str, str]:
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: not an exact pin: {raw!r}"
        out[match.group(1).lower().replace("_", "-")] = match.group(2)
    return out


@pytest.mark.parametrize("accel", sorted(ACCELS))
def test_pins_are_exact_and_agree_with_the_cpu_requirements(accel):
    path = ROOT / f"requirements-{accel}.txt"
    text = path.read_text()
    assert "://" not in text and "--index" not in text and "-f " not in text
    accel_pins, cpu_pins = pins(path), pins(ROOT / "requirements.txt")
    assert ACCELS[accel] in accel_pins
    assert accel_pins["jax"] == cpu_pins["jax"] and accel_pins["jaxlib"] == cpu_pins["jaxlib"]
    shared = set(accel_pins) & set(cpu_pins)
    assert {p: accel_pins[p] for p in shared} == {p: cpu_pins[p] for p in shared}
    source = (ROOT / f"requirements-{accel}.in").read_text()
    assert f"jax[{accel}]=={cpu_pins['jax']}" in source


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("accel", sorted(ACCELS))
def test_make_venv_accel_installs_beside_the_cpu_build(accel):
    out = make("venv", f"ACCEL={accel}", "VENV=.venv-accel-dry-run")
    assert out.returncode == 0, out.stderr
    install = [line for line in out.stdout.splitlines() if "-r requirements.txt" in line]
    assert install and install[0].rstrip().endswith(f"-r requirements-{accel}.txt"), out.stdout
    assert f"touch .venv-accel-dry-run/.installed-{accel}" in out.stdout


def test_unknown_accel_is_one_line():
    out = make("venv", "ACCEL=rocm")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "ACCEL=rocm is not an accelerator build" in lines[0], lines
    assert "ACCEL=cuda12 or ACCEL=tpu" in lines[0]
