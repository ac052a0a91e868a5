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


# The size rule (docs/design.md): files under 400 lines, functions under 60 (docstrings not
# counted), except the trainer's one linear, sectioned loop.
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60
EXEMPT = {("launch/trainer.py", "train")}


def long_functions(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:] or body
            lines = node.end_lineno - body[0].lineno + 2  # + the def line
            if lines > MAX_FUNCTION_LINES:
                out.append((node.name, lines))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN) + ["results"])
def test_file_and_function_sizes(package):
    too_long = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        rel = str(f.relative_to(ROOT))
        n = len(f.read_text().splitlines())
        if n > MAX_FILE_LINES:
            too_long[rel] = n
        for name, lines in long_functions(f):
            if (rel, name) not in EXEMPT:
                too_long[f"{rel}::{name}"] = lines
    assert not too_long
