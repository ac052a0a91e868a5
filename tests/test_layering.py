"""The layering rule (README, Development), checked on the source: ``sketchy`` and
``workloads`` stand alone on the ground floor, ``launch`` sits above them, and ``results``
(tables and figures from records) is the top floor that nothing imports."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "sketchy": {"workloads", "launch", "hydra", "wandb", "omegaconf", "results"},
    "workloads": {"sketchy", "launch", "results"},
    "launch": {"results"},
    "benchmarks": {"results"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no python files under {package}/"
    bad = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files}
    assert not {k: v for k, v in bad.items() if v}
