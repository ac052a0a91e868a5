"""Logging: W&B offline runs read back, the run id on resume, spectra values, schedules.

The offline ``.wandb`` file is W&B's transaction log: a 7-byte header (``:W&B``, magic
``0xBEE1``, version 0), then LevelDB-log framing (32 KiB blocks; each chunk a 7-byte header
``crc32 (4) | length (2, LE) | type (1: full, 2: first, 3: middle, 4: last)``, a block tail
shorter than a header is zero padding) around serialized ``wandb.proto`` ``Record``s.
wandb 0.31 ships no Python reader for it any more (``wandb.sdk.internal.datastore`` was
removed when the Go core took over), so :func:`read_wandb_records` unframes the log and
decodes every record with wandb's own protobuf classes.
"""

import json
import math
import struct
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from launch import schedules
from launch.metrics_log import MetricsLog, read_metrics
from sketchy import spectra
from sketchy.frequent_directions import FDState
from sketchy.shampoo import ShampooFactor

BLOCK, HEADER = 32768, 7


def read_wandb_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1
    offset, pending, records = HEADER, b"", []
    while offset + HEADER <= len(data):
        left = BLOCK - offset % BLOCK
        if left < HEADER:
            offset += left
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        chunk = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        if kind == 0:
            break  # zero padding at the end
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def wandb_run(run_dir: Path) -> list[dict]:
    """Every offline W&B run under ``run_dir``, oldest first: its id, config and history."""
    out = []
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        run, history = None, {}
        for record in read_wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
            elif kind == "history":
                row = {item_key(i): json.loads(i.value_json) for i in record.history.item}
                history[row["_step"]] = row
        assert run is not None, path
        config = {u.key: json.loads(u.value_json) for u in run.config.update}
        out.append({"id": run.run_id, "config": config, "history": history, "path": path})
    return out


def assert_jsonl_rows_in_wandb(run_dir: Path, history: dict, steps=None):
    """Every metric of metrics.jsonl is in the W&B history at its step, with its value."""
    rows = read_metrics(run_dir)
    assert rows
    for row in rows:
        step = row["step"]
        if steps is not None and step not in steps:
            continue
        assert step in history, (step, sorted(history))
        for key, value in row.items():
            if key == "step":
                continue
            assert key in history[step], (step, key)
            got = history[step][key]
            if isinstance(value, float):
                assert got == pytest.approx(value, rel=1e-12), (step, key)
            else:
                assert got == value, (step, key)


# ---------------------------------------------------------------- W&B offline
@pytest.mark.slow
def test_wandb_offline_run_is_read_back_and_resumed_under_the_same_id(tmp_path, monkeypatch):
    """MetricsLog as the trainer uses it (memory, spectra and train metrics, the config),
    then a second MetricsLog on the same run directory: a resumed run."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    config = {"optimizer": {"rank": 8, "b2": 0.999}, "trainer": {"steps": 4}, "seed": 3}
    first_rows = {
        0: {"optimizer/bytes_statistics": 1234, "optimizer/bytes_per_param_total": 2.25},
        2: {"train/loss": 0.75, "train/learning_rate": 1e-3},
        3: {"spectra/top8_share_mean": 0.625, "spectra/escaped_mass_mean": 0.125},
    }
    log = MetricsLog(run_dir, wandb_mode="offline", project="p", run_name="r",
                     config=config, tags=["t"])  # fmt: skip
    for step, row in first_rows.items():
        log.log(step, row)
    log.close()
    run_id = (run_dir / "wandb_run_id").read_text().strip()

    log = MetricsLog(run_dir, wandb_mode="offline", project="p", run_name="r",
                     config=config, tags=["t"])  # fmt: skip
    log.log(3, {"resumed_from_step": 3})
    log.log(4, {"train/loss": 0.5})
    log.close()

    runs = wandb_run(run_dir)
    assert [r["id"] for r in runs] == [run_id, run_id]
    assert (run_dir / "wandb_run_id").read_text().strip() == run_id
    for r in runs:
        assert {k: r["config"][k] for k in config} == config
    first, second = runs[0]["history"], runs[1]["history"]
    for step, row in first_rows.items():
        assert {k: first[step][k] for k in row} == row
    assert second[4]["train/loss"] == 0.5 and second[3]["resumed_from_step"] == 3
    assert_jsonl_rows_in_wandb(run_dir, {**first, 4: second[4]}, steps={0, 2, 4})


@pytest.mark.slow
def test_trainer_wandb_run_holds_every_logged_metric(smoke_overrides, tmp_path, monkeypatch):
    """A Sketchy run through the trainer with logger=wandb: every metrics.jsonl value (train
    metrics, optimizer bytes, spectra, evaluation) is in the W&B history at its step, the
    config is the run's config; resuming continues the same W&B run id."""
    from conftest import compose_config

    from launch.train import run

    monkeypatch.setenv("WANDB_MODE", "offline")
    common = [*smoke_overrides, "logger=wandb", "optimizer=sketchy", "rank=8"]
    run(compose_config([*common, "trainer.steps=6"]))
    run_dir = tmp_path / "run"
    (first,) = wandb_run(run_dir)
    history = first["history"]
    assert_jsonl_rows_in_wandb(run_dir, history)
    keys = set().union(*history.values())
    assert {"optimizer/bytes_statistics", "optimizer/bytes_grafting", "train/loss"} <= keys
    assert {k for k in keys if k.startswith("spectra/")} >= {
        "spectra/intrinsic_dim_mean",
        "spectra/escaped_mass_mean",
    }
    assert first["config"]["optimizer"]["rank"] == 8
    assert first["config"]["trainer"]["steps"] == 6

    run(compose_config([*common, "trainer.steps=8"]))
    runs = wandb_run(run_dir)
    assert len(runs) == 2 and runs[1]["id"] == first["id"]
    assert runs[1]["history"][6]["resumed_from_step"] == 6
    assert_jsonl_rows_in_wandb(run_dir, runs[1]["history"], steps={8})


# ---------------------------------------------------------------- spectra
def random_orthonormal(rng, d, k):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q[:, :k]


def known_factors():
    """A Shampoo factor (2 blocks of 5 x 5) and a sketch (3 blocks, d = 6, k = 3)."""
    rng = np.random.default_rng(0)
    shampoo_lams = np.array([[5.0, 3.0, 1.0, 0.5, 0.0], [2.0, 2.0, 1.0, 0.0, 0.0]])
    stats = []
    for lam in shampoo_lams:
        q = random_orthonormal(rng, 5, 5)
        stats.append((q * lam) @ q.T)
    factor = ShampooFactor(jnp.asarray(np.stack(stats)), jnp.zeros((2, 5, 5)))
    sketch_lams = np.array([[4.0, 2.0, 1.0], [3.0, 0.5, 0.0], [1.0, 1.0, 1.0]])
    tails = np.array([0.5, 0.25, 0.0])
    vecs = np.stack([random_orthonormal(rng, 6, 3) for _ in range(3)])
    vecs[1][:, 2] = 0.0  # a column without mass is zero (FD's convention)
    sketch = FDState(
        jnp.asarray(vecs, jnp.float32),
        jnp.asarray(sketch_lams, jnp.float32),
        jnp.asarray(tails, jnp.float32),
    )
    dense_sketches = [
        (v * lam) @ v.T + t * np.eye(6) for v, lam, t in zip(vecs, sketch_lams, tails, strict=True)
    ]
    return {"shampoo": factor, "sketchy": sketch}, stats, dense_sketches, tails


def test_factor_spectra_equal_eigvalsh_of_the_dense_factors():
    state, stats, dense_sketches, tails = known_factors()
    found = {f["path"]: f for f in spectra.factor_spectra(state)}
    assert len(found) == 2
    sh = next(f for p, f in found.items() if "shampoo" in p)
    sk = next(f for p, f in found.items() if "sketchy" in p)
    assert (sh["dim"], sk["dim"]) == (5, 6) and sh["escaped"] is None
    for got, dense in zip(np.asarray(sh["eigvals"]), stats, strict=True):
        np.testing.assert_allclose(np.sort(got), np.linalg.eigvalsh(dense), atol=1e-5)
    for got, dense in zip(np.asarray(sk["eigvals"]), dense_sketches, strict=True):
        np.testing.assert_allclose(np.sort(got), np.linalg.eigvalsh(dense), atol=1e-5)
    np.testing.assert_allclose(np.asarray(sk["escaped"]), tails)


def test_spectra_summary_equals_numpy_on_the_dense_factors():
    state, stats, dense_sketches, tails = known_factors()
    k = 2
    shares, dims, sizes = [], [], []
    for dense in [*stats, *dense_sketches]:
        lam = np.sort(np.clip(np.linalg.eigvalsh(dense), 0, None))[::-1]
        shares.append(lam[:k].sum() / lam.sum())  # every dim (5, 6) > k
        dims.append(lam.sum() / lam[0])
        sizes.append(len(dense))
    got = spectra.spectra_summary(state, k=k)
    assert got["num_factors"] == 5
    assert got[f"top{k}_share_mean"] == pytest.approx(np.mean(shares), rel=1e-5)
    assert got["intrinsic_dim_mean"] == pytest.approx(np.mean(dims), rel=1e-5)
    assert got["intrinsic_dim_q25"] == pytest.approx(np.percentile(dims, 25), rel=1e-5)
    assert got["intrinsic_dim_q75"] == pytest.approx(np.percentile(dims, 75), rel=1e-5)
    assert got["dim_mean"] == pytest.approx(np.mean(sizes))
    assert got["escaped_mass_mean"] == pytest.approx(tails.mean(), rel=1e-6)
    # Factors no larger than k are exact and left out of the share.
    assert f"top{k}_share_mean" not in spectra.spectra_summary(state, k=6)


# ---------------------------------------------------------------- schedules
def cosine_closed_form(t, peak, total, warmup, end):
    if t < warmup:
        return peak * t / warmup
    frac = min(t - warmup, total - warmup) / (total - warmup)
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * frac))


def linear_closed_form(t, peak, total, warmup, end):
    if t < warmup:
        return peak * t / warmup
    frac = min(t - warmup, total - warmup) / (total - warmup)
    return peak + (end - peak) * frac


@pytest.mark.parametrize(
    ("make", "closed_form"),
    [
        (schedules.warmup_cosine, cosine_closed_form),
        (schedules.warmup_linear, linear_closed_form),
    ],
)
@pytest.mark.parametrize(
    ("total", "fraction", "end"), [(1000, 0.05, 0.0), (200, 0.1, 0.1), (100, 0.0, 0.5)]
)
def test_schedules_against_closed_form(make, closed_form, total, fraction, end):
    peak = 3e-3
    schedule = make(peak, total, warmup_fraction=fraction, end_fraction=end)
    warmup = int(fraction * total)
    steps = {0, 1, warmup // 2, warmup - 1, warmup, warmup + 1, total // 2, total - 1}
    steps = sorted(t for t in steps if t >= 0)
    steps += [total, total + 50]
    for t in steps:
        expected = closed_form(t, peak, total, warmup, end * peak)
        assert float(schedule(t)) == pytest.approx(expected, rel=1e-5, abs=1e-9), t
    assert float(schedule(warmup)) == pytest.approx(peak, rel=1e-6)  # the peak
    assert float(schedule(total)) == pytest.approx(end * peak, abs=1e-9)  # the end value


def test_constant_schedule():
    schedule = schedules.constant(2e-3, 100)
    assert [float(schedule(t)) for t in (0, 50, 100, 500)] == pytest.approx([2e-3] * 4)


# ---------------------------------------------------------------- optimizer counters
def kron_state(failures, nonfinite):
    import sketchy

    state = sketchy.scale_by_shampoo().init({"w": jnp.zeros((4, 3))})
    return state._replace(
        failures=jnp.asarray(failures, jnp.int32), nonfinite_steps=jnp.asarray(nonfinite)
    )


def test_optimizer_counters_sum_every_kronecker_state():
    """The trainer logs optimizer_counters(): failures and non-finite steps summed over
    every KroneckerState, skipped steps from optax.apply_if_finite."""
    import optax

    from sketchy.kronecker import optimizer_counters

    skip = optax.apply_if_finite(optax.sgd(0.1), 3).init({"w": jnp.zeros(3)})
    skip = skip._replace(total_notfinite=jnp.asarray(5, jnp.int32))
    state = {"a": kron_state(2, 3), "b": (kron_state(7, 0), skip)}
    assert optimizer_counters(state) == {
        "decomposition_failures": 9,
        "nonfinite_grad_steps": 3,
        "skipped_steps": 5,
    }


def test_optimizer_counters_see_inside_apply_if_finite():
    import sketchy
    from sketchy.kronecker import optimizer_counters

    full = sketchy.sketchy(1e-3, rank=2).init({"w": jnp.zeros((4, 3))})
    kron = full.inner_state[0]
    assert isinstance(kron, sketchy.KroneckerState)
    full = full._replace(
        total_notfinite=jnp.asarray(5, jnp.int32),
        inner_state=(kron._replace(failures=jnp.asarray(2, jnp.int32)), *full.inner_state[1:]),
    )
    assert optimizer_counters(full) == {
        "decomposition_failures": 2,
        "nonfinite_grad_steps": 0,
        "skipped_steps": 5,
    }
