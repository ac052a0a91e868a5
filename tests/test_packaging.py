"""The wheel ships the library alone, and it works when installed into a fresh venv."""

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
