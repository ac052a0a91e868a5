"""``trainer.profile_steps=[a,b]``: a JAX profiler trace of training steps ``a..b``.

Steps are numbered as in ``metrics.jsonl`` (the first step is 1; both ends included). The
trace goes to ``<run_dir>/profile/`` (``<run_dir>/profile/process_<i>/`` on multi-host
runs): ``plugins/profile/<timestamp>/<host>.xplane.pb`` for TensorBoard's profile plugin
(``tensorboard --logdir <run_dir>/profile``, with ``tensorboard-plugin-profile``) and
``perfetto_trace.json.gz`` beside it for https://ui.perfetto.dev (open the file). Each step
is a ``StepTraceAnnotation`` named ``train``, so the tools show per-step timing. Step 1
includes compiling the step; profile later steps to see the steady state.
"""

import contextlib
from pathlib import Path

import jax

from launch.errors import UserError


def check_steps(steps, total_steps: int) -> tuple[int, int] | None:
    """``(a, b)`` from ``trainer.profile_steps``, or ``None``; bad values: one line."""
    if steps is None:
        return None
    ok = (
        not isinstance(steps, str)
        and len(steps) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
    )
    if not ok or not 1 <= steps[0] <= steps[1] <= total_steps:
        raise UserError(
            f"trainer.profile_steps={list(steps) if ok else steps!r} must be two step numbers "
            f"[a,b] with 1 <= a <= b <= trainer.steps={total_steps}: use e.g. "
            f"trainer.profile_steps=[{min(2, total_steps)},{min(4, total_steps)}] "
            f"(or null: no trace)"
        )
    return int(steps[0]), int(steps[1])


class StepProfiler:
    """Starts the trace before step ``a``, stops it after step ``b`` has finished."""

    def __init__(self, window: tuple[int, int] | None, run_dir: Path):
        self.window = window
        self.directory = Path(run_dir) / "profile"
        if jax.process_count() > 1:
            self.directory = self.directory / f"process_{jax.process_index()}"
        self.active = False

    @contextlib.contextmanager
    def step(self, number: int):
        """Wraps the dispatch of step ``number`` (its trace starts here when it is ``a``,
        or the first step of a resumed run inside the window)."""
        if self.window and not self.active and self.window[0] <= number <= self.window[1]:
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory), create_perfetto_trace=True)
            self.active = True
        if not self.active:
            yield
            return
        with jax.profiler.StepTraceAnnotation("train", step_num=number):
            yield

    def after(self, number: int, outputs) -> None:
        """After step ``number`` was dispatched: at ``b``, wait for it, then stop."""
        if self.active and number >= self.window[1]:
            jax.block_until_ready(outputs)
            self.close()

    def close(self) -> None:
        if self.active:
            self.active = False
            jax.profiler.stop_trace()
