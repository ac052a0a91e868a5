"""launch.run_record.write_record: the one record writer every kind of run uses."""

import json
import os

from launch.run_record import hardware, versions, write_record


def test_every_record_is_stamped_with_when_where_and_what(tmp_path):
    fields = {"experiment": "toy", "config": {"a": 1}, "wall_time_s": 1.5, "final": {"x": 2.0}}
    path = write_record(tmp_path / "records" / "toy" / "run.json", fields)
    record = json.loads(path.read_text())
    assert {k: record[k] for k in fields} == fields  # the run's own fields, unchanged
    assert set(record) == {*fields, "finished_at", "hardware", "versions"}
    assert record["hardware"] == hardware() and record["hardware"]["cpu_count"] == os.cpu_count()
    assert record["versions"]["python"] == versions()["python"]
    assert {"jax", "optax", "numpy"} <= set(record["versions"])
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temp file left
