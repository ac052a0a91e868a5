"""``make figures``: regenerate every table and figure from ``results/records`` only."""

import importlib
import pkgutil
import sys
from pathlib import Path

import results.plots

ROOT = Path(__file__).resolve().parent
RECORDS = ROOT / "records"


def main(out_dir: Path = ROOT) -> list[Path]:
    written: list[Path] = []
    for info in sorted(pkgutil.iter_modules(results.plots.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"results.plots.{info.name}")
        if not hasattr(module, "make"):
            continue  # a shared helper module, not a figure
        paths = module.make(RECORDS, out_dir)
        for p in paths:
            print(f"wrote {Path(p).relative_to(out_dir) if Path(p).is_relative_to(out_dir) else p}")
        written.extend(paths)
    if not written:
        print("no figures: results/records is empty", file=sys.stderr)
    return written


if __name__ == "__main__":
    main()
