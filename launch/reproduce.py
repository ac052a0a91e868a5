"""``make reproduce``: run every study of ``configs/reproduce.yaml``, resumably.

    python -m launch.reproduce                      # everything not yet recorded
    python -m launch.reproduce --list               # the plan, run by run: done / pending
    python -m launch.reproduce --study fig2_ogbg_molpcba_mini --max-runs 4

Each run is one ``launch/train.py`` process (the same entry point as any other run) with
``hydra.mode=RUN``, a fixed ``run_dir`` under ``runs/reproduce/`` (an interrupted run resumes
from its checkpoints) and an explicit ``record_name``, so a run whose record exists is
skipped and a rerun replaces, never duplicates, its record. Tuning (see the plan's header):
the best validation objective per optimizer, the grid extended past an edge where the best
lies on it; later runs read the tuned value from the tuning records, so the plan can stop
and continue anywhere. One progress line per run.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from launch.run_record import lower_is_better

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "configs" / "reproduce.yaml"
RECORDS = ROOT / "results" / "records"
RUNS = ROOT / "runs" / "reproduce"


@dataclass(frozen=True)
class Run:
    """One training run of the plan and where its record goes."""

    experiment: str  # configs/experiment/<experiment>.yaml
    experiment_name: str  # records/<experiment_name>/
    record_name: str  # records/<experiment_name>/<record_name>.json
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def record(self, records: Path) -> Path:
        return records / self.experiment_name / f"{self.record_name}.json"

    def command(self, records: Path, runs: Path) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "launch" / "train.py"),
            f"experiment={self.experiment}",
            *self.overrides,
            "hydra.mode=RUN",
            f"experiment_name={self.experiment_name}",
            f"record_name={self.record_name}",
            f"record_dir={records}",
            f"run_dir={runs / self.experiment_name / self.record_name}",
            "trainer.progress_bar=false",
        ]


def value_tag(value: float) -> str:
    """``0.001`` -> ``0.001``, ``3e-05`` -> ``3e-05``: the float's own repr, for file names."""
    return repr(float(value))


def load_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def objective_of(record: dict) -> tuple[str, float]:
    metric = record["config"]["trainer"]["objective"]
    value = record["final"].get(metric, float("nan"))
    return metric, float(value)


def tuning_run(study: dict, optimizer: str, value: float) -> Run:
    tune = study["tune"]
    return Run(
        experiment=study["experiment"],
        experiment_name=f"{study['experiment']}_tuning",
        record_name=f"{optimizer}_lr{value_tag(value)}_seed{tune['seed']}",
        overrides=(
            f"optimizer={optimizer}",
            *study.get("overrides", ()),
            f"{tune['param']}={value}",
            f"seed={tune['seed']}",
        ),
    )


def best_of(results: dict[float, dict]) -> float | None:
    """The grid value with the best finite validation objective (ties: the smaller value)."""
    scored = []
    for value, record in sorted(results.items()):
        metric, score = objective_of(record)
        if math.isfinite(score):
            scored.append((score if lower_is_better(metric) else -score, value))
    return min(scored)[1] if scored else None


def tuning_state(study: dict, optimizer: str, records: Path) -> tuple[list[float], dict]:
    """The grid values still to run for ``optimizer`` (empty when its tuning is complete) and
    the tuning state ``{"values": [...], "best": v, "on_edge": bool}``."""
    tune = study["tune"]
    grid = sorted(float(v) for v in tune["grid"])
    ratio = grid[1] / grid[0] if len(grid) > 1 else 3.0
    values, extensions = list(grid), 0
    while True:
        results = {}
        for v in values:
            record = load_record(tuning_run(study, optimizer, v).record(records))
            if record is not None:
                results[v] = record
        missing = [v for v in values if v not in results]
        if missing:
            return missing, {"values": values, "best": None, "on_edge": False}
        best = best_of(results)
        on_edge = best is not None and len(values) > 1 and best in (values[0], values[-1])
        if not on_edge or extensions >= int(tune.get("max_extensions", 0)):
            return [], {"values": values, "best": best, "on_edge": on_edge}
        low = best == values[0]
        values = [values[0] / ratio, *values] if low else [*values, values[-1] * ratio]
        values = [float(f"{v:.6g}") for v in values]  # 1e-4, not 9.999999999999999e-05
        extensions += 1


def tuned_value(study: dict, optimizer: str, records: Path) -> float | None:
    pending, state = tuning_state(study, optimizer, records)
    return None if pending else state["best"]


def plan_runs(plan: dict, records: Path) -> list[tuple[str, Run | None, str]]:
    """``[(study, run or None, note)]``: every run known now, in order. A run that waits for
    tuning appears as ``None`` with a note (its value is known once tuning is recorded)."""
    studies = {s["name"]: s for s in plan["studies"]}
    out = []
    for study in plan["studies"]:
        name = study["name"]
        if "tune" in study:
            for opt in study["optimizers"]:
                pending, _ = tuning_state(study, opt, records)
                done = recorded_tuning_runs(study, opt, records)
                todo = [tuning_run(study, opt, v) for v in pending]
                out += [(name, r, "tuning") for r in done + [r for r in todo if r not in done]]
            variants = {opt: {"optimizer": opt} for opt in study["optimizers"]}
            source = study
        else:
            variants = study["variants"]
            source = studies[study["tuned_from"]]
        for variant, spec in variants.items():
            lr = tuned_value(source, spec["optimizer"], records)
            for seed in study["seeds"]:
                if lr is None:
                    out.append((name, None, f"{variant} seed {seed}: waits for tuning"))
                    continue
                out.append(
                    (
                        name,
                        Run(
                            experiment=study["experiment"],
                            experiment_name=study["experiment"],
                            record_name=f"{variant}_seed{seed}",
                            overrides=(
                                f"optimizer={spec['optimizer']}",
                                *study.get("overrides", ()),
                                *spec.get("overrides", ()),
                                f"{source['tune']['param']}={lr}",
                                f"seed={seed}",
                            ),
                        ),
                        "final",
                    )
                )
    return out


def recorded_tuning_runs(study: dict, optimizer: str, records: Path) -> list[Run]:
    """Tuning runs already recorded for ``optimizer``, in grid order."""
    folder = records / f"{study['experiment']}_tuning"
    runs = []
    for path in sorted(folder.glob(f"{optimizer}_lr*_seed{study['tune']['seed']}.json")):
        value = float(path.stem[len(optimizer) + 3 :].rsplit("_seed", 1)[0])
        runs.append((value, tuning_run(study, optimizer, value)))
    return [r for _, r in sorted(runs)]


def execute(run: Run, records: Path, runs: Path) -> tuple[int, float]:
    """Run one training process, its output appended to ``<run_dir>/train.log``."""
    log_path = runs / run.experiment_name / run.record_name / "train.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log_path, "a") as log:
        proc = subprocess.run(
            run.command(records, runs), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    return proc.returncode, time.time() - t0


def print_totals(todo: list[tuple[str, Run | None, str]], records: Path) -> None:
    """Per study and in all: runs recorded of those known, and the hours their records
    took (``wall_time_s``: a resumed run counts its last attempt only, so this is a lower
    bound on the time the plan takes on the machine that made them)."""
    totals: dict[str, list] = {}
    for study, run, _ in todo:
        t = totals.setdefault(study, [0, 0, 0.0])
        t[1] += 1
        record = load_record(run.record(records)) if run is not None else None
        if record is not None:
            t[0] += 1
            t[2] += float(record.get("wall_time_s") or 0.0)
    for study, (done, known, wall) in totals.items():
        print(f"{study}: {done}/{known} recorded, {wall / 3600:.2f} h")
    done, known, wall = (sum(t[i] for t in totals.values()) for i in range(3))
    print(f"total: {done}/{known} recorded, {wall / 3600:.2f} h of recorded wall time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=PLAN)
    parser.add_argument("--records", type=Path, default=RECORDS)
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--study", action="append", help="only these studies (repeatable)")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after N new runs")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    if not args.plan.exists():
        print(f"error: no plan at {args.plan}: pass --plan PATH", file=sys.stderr)
        return 2
    plan = OmegaConf.to_container(OmegaConf.load(args.plan), resolve=True)
    names = [s["name"] for s in plan["studies"]]
    unknown = sorted(set(args.study or ()) - set(names))
    if unknown:
        print(f"error: unknown study {unknown[0]!r}: use one of {names}", file=sys.stderr)
        return 2
    wanted = set(args.study or names)
    started = 0
    while True:
        todo = [(s, r, n) for s, r, n in plan_runs(plan, args.records) if s in wanted]
        if args.list:
            for study, run, note in todo:
                if run is None:
                    print(f"{study}: waiting  {note}")
                    continue
                state = "done   " if run.record(args.records).exists() else "pending"
                print(f"{study}: {state}  {run.record_name} ({note}: {' '.join(run.overrides)})")
            print_totals(todo, args.records)
            return 0
        pending = [
            (s, r, n) for s, r, n in todo if r is not None and not r.record(args.records).exists()
        ]
        if not pending:
            waiting = sum(r is None for _, r, _ in todo)
            print(f"reproduce: nothing left to run ({len(todo) - waiting} runs recorded)")
            return 0
        if args.max_runs is not None and started >= args.max_runs:
            print(f"reproduce: stopped after {started} runs; {len(pending)}+ still pending")
            return 0
        study, run, note = pending[0]
        started += 1
        print(f"[{started}] {study} {run.record_name} ({note}): running...", flush=True)
        code, seconds = execute(run, args.records, args.runs)
        record = load_record(run.record(args.records))
        if code != 0 or record is None:
            log = args.runs / run.experiment_name / run.record_name / "train.log"
            print(
                f"error: {study} {run.record_name} failed (exit {code}): see {log}", file=sys.stderr
            )
            return 1
        metric, score = objective_of(record)
        print(
            f"[{started}] {study} {run.record_name}: {metric} {score:.4f} "
            f"in {seconds / 60:.1f} min",
            flush=True,
        )


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.exit(main())
