"""The wheel ships the library alone, and it works when installed into a fresh venv."""

import ast
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[1]


def test_packaging_config_ships_every_library_package_and_only_its_dependencies():
    """What the (slow) build below checks, from the configuration, in a second: the wheel's
    package list (pyproject's ``packages.find``, namespace discovery as setuptools does it)
    is exactly the directories of ``sketchy/`` that hold code, and the library imports
    nothing but the standard library and its three declared dependencies."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = config["tool"]["setuptools"]["packages"]["find"]
    assert find.get("namespaces", True)  # setuptools' default for `packages.find`
    found = {
        name
        for name in setuptools.find_namespace_packages(str(ROOT), include=find["include"])
        if "__pycache__" not in name
    }
    code_dirs = {p.parent for p in (ROOT / "sketchy").rglob("*.py")}
    assert found == {".".join(d.relative_to(ROOT).parts) for d in code_dirs}, found
    deps = {re.split(r"[<>=!~ \[;]", d)[0] for d in config["project"]["dependencies"]}
    assert deps == {"jax", "optax", "numpy"}
    allowed = set(sys.stdlib_module_names) | deps | {"sketchy"}
    for path in sorted((ROOT / "sketchy").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, (str(path.relative_to(ROOT)), roots - allowed)


@pytest.mark.slow  # a real build and install: ~35-45 s on 2 shared cores
def test_wheel_holds_only_the_library_and_installs_into_a_fresh_venv(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info/ beside the sources.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "sketchy", src / "sketchy", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(src)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("sketchy-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"sketchy"}, tops
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # this pip installs into it (`--python`): faster
    py = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    # jax/optax/numpy from this environment's site-packages (a plain PYTHONPATH entry: its
    # .pth files, the repository among them, are not read), sketchy from the fresh venv.
    deps = sysconfig.get_paths()["purelib"]
    probe = (
        "import importlib.util, jax.numpy as jnp, optax, sketchy\n"
        f"assert sketchy.__file__.startswith({str(env_dir)!r}), sketchy.__file__\n"
        "tx = sketchy.sketchy(1e-3, rank=2)\n"
        "p = {'w': jnp.ones((4, 3))}\n"
        "u, _ = tx.update(p, tx.init(p), p)\n"
        "assert u['w'].shape == (4, 3) and sketchy.kradagrad.kradagrad_star\n"
        "print([importlib.util.find_spec(m) is None for m in ('launch', 'workloads', 'results')])"
    )
    out = subprocess.run(
        [py, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True, True, True]"
