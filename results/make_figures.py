"""``make figures``: regenerate every table and figure from ``results/records`` only.

Every module of :mod:`results.plots` with a ``make(records_dir, out_dir)`` is an artifact.
Per artifact one line is printed, in module-name order:

- ``<artifact>: written: <paths>`` (and ``; missing: ...`` when some of its records are
  absent), or
- ``<artifact>: skipped: missing <records> (<the command that makes them>)``.

A module says what it needs through ``missing_records(records_dir) -> list[str]`` (each
entry ``"<record path or glob> (<command>)"``); :data:`NEEDS` stands in for modules that do
not define it yet. Output is deterministic: records are read in sorted order and PNGs carry
no date (``SOURCE_DATE_EPOCH`` is pinned for the formats that would).
"""

import importlib
import os
import pkgutil
import sys
from pathlib import Path

import results.plots

ROOT = Path(__file__).resolve().parent
RECORDS = ROOT / "records"

# Modules without ``missing_records``: the records they read and the command that makes them.
NEEDS = {
    "kradagrad_autoencoder": (
        "kradagrad_autoencoder/*.json (python launch/train.py experiment=kradagrad_autoencoder "
        "tuned=mnist_autoencoder_<optimizer> seed=<seed>)"
    ),
    "kradagrad_quadratic": (
        "kradagrad_quadratic/*.json (python launch/train.py experiment=kradagrad_quadratic)"
    ),
    "oco_appendix_a": "oco/*.json (python launch/oco.py; experiment=observation2)",
}


def _missing(name: str, module, records_dir: Path) -> list[str]:
    if hasattr(module, "missing_records"):
        return list(module.missing_records(records_dir))
    return [NEEDS.get(name, f"records read by results/plots/{name}.py (command not declared)")]


def _rel(path: Path, out_dir: Path) -> str:
    path = Path(path)
    return str(path.relative_to(out_dir)) if path.is_relative_to(out_dir) else str(path)


def main(out_dir: Path = ROOT, records_dir: Path = RECORDS) -> list[Path]:
    """Make every artifact from ``records_dir`` into ``out_dir``; return the paths written."""
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")  # no dates in PDF/SVG/PS metadata
    out_dir, records_dir = Path(out_dir), Path(records_dir)
    written: list[Path] = []
    for info in sorted(pkgutil.iter_modules(results.plots.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"results.plots.{info.name}")
        if not hasattr(module, "make"):
            continue  # a shared helper module, not an artifact
        paths = sorted(module.make(records_dir, out_dir), key=str)
        declared = hasattr(module, "missing_records")
        if paths:
            line = f"{info.name}: written: {', '.join(_rel(p, out_dir) for p in paths)}"
            missing = _missing(info.name, module, records_dir) if declared else []
            print(line + (f"; missing: {'; '.join(missing)}" if missing else ""))
        else:
            missing = _missing(info.name, module, records_dir)
            print(f"{info.name}: skipped: missing {'; '.join(missing)}")
        written.extend(paths)
    if not written:
        print("no artifacts: results/records has none of the records they need", file=sys.stderr)
    return written


if __name__ == "__main__":
    main()
