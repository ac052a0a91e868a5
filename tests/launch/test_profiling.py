"""``trainer.profile_steps=[a,b]``: a JAX profiler trace of those steps in the run
directory (TensorBoard's xplane and a Perfetto trace); bad values are one line."""

import gzip
import json

import pytest
from conftest import compose_config

from launch.errors import UserError
from launch.profiling import check_steps
from launch.train import run


def test_trace_of_the_chosen_steps(tmp_path):
    overrides = ["debug=smoke", "workload=mnist_autoencoder", "workload.max_train_examples=256",
                 "optimizer=adam", "mesh.axes.data=1", "trainer.steps=4",
                 "trainer.profile_steps=[2,3]", f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    run(compose_config(overrides))
    profile = tmp_path / "run" / "profile"
    xplanes = list(profile.glob("plugins/profile/*/*.xplane.pb"))
    assert len(xplanes) == 1 and xplanes[0].stat().st_size > 0, list(profile.rglob("*"))
    perfetto = list(profile.glob("plugins/profile/*/perfetto_trace.json.gz"))
    assert len(perfetto) == 1
    events = json.loads(gzip.decompress(perfetto[0].read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    # The two traced steps are annotated (TensorBoard's step view and Perfetto show them).
    steps = {e.get("args", {}).get("step_num") for e in events if e.get("name") == "train"}
    assert steps == {"2", "3"}, steps


@pytest.mark.parametrize(
    ("value", "total", "match"),
    [
        ([0, 3], 6, r"trainer.profile_steps=\[0, 3\] must be two step numbers"),
        ([4, 2], 6, "1 <= a <= b <= trainer.steps=6"),
        ([2, 9], 6, "trainer.steps=6"),
        ([2], 6, r"\[a,b\]"),
        ("2,3", 6, r"\[a,b\]"),
        ([2.5, 3], 6, r"\[a,b\]"),
    ],
)
def test_bad_profile_steps(value, total, match):
    with pytest.raises(UserError, match=match):
        check_steps(value, total)


def test_profile_steps_ok():
    assert check_steps(None, 6) is None
    assert check_steps([2, 2], 6) == (2, 2)
    assert check_steps([1, 6], 6) == (1, 6)


def test_bad_profile_steps_refused_before_anything_is_written(tmp_path):
    overrides = ["debug=smoke", "workload=mnist_autoencoder", "trainer.profile_steps=[5,9]",
                 f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    with pytest.raises(UserError, match="trainer.profile_steps"):
        run(compose_config(overrides))
    assert not (tmp_path / "run").exists()
