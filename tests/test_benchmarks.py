"""Smoke runs of ``benchmarks/`` at toy sizes: they run, print their tables, and the state
sizes they report are the hand counts of the paper's formulas."""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY_PARAMS = 16 * 8 + 8  # benchmarks/param_shapes.py: toy_set()


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(text: str) -> dict[str, list[str]]:
    """``{first cell: other cells}`` of every markdown table row (header rows included)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_optimizer_step_benchmark_on_toy_shapes(capsys):
    bench = load("optimizer_step")
    bench.main(
        ["--sets", "toy", "--cycles", "1", "--no-reference", "--paired", "2",
         "--only", "adamw", "shampoo", "sketchy r128",
         "--scaling", "--scaling-dims", "16", "32", "--scaling-rank", "4"]
    )  # fmt: skip
    out = capsys.readouterr().out
    out, refresh = out.split("## refresh of one d x d block, rank 4")
    refresh, targets = refresh.split("## targets")
    # The paired rounds: a ratio per round for the target rows that ran, and their median.
    out, pairs = out.split("## toy, paired rounds")
    pair_rows = table_rows(pairs)
    assert pair_rows.pop("ratio") == ["per round", "median"]
    assert set(pair_rows) == {
        "shampoo compile / adamw (optax)",
        "sketchy r128 compile / adamw (optax)",
        "sketchy r128 amortized / shampoo",
    }
    for per_round, median in pair_rows.values():
        values = [float(v) for v in per_round.split(", ")]
        assert len(values) == 2 and all(v > 0 for v in values)
        assert float(median) == pytest.approx(sum(values) / 2, abs=0.006)
    # The targets table: one row per quantity, each with a measured value and a verdict.
    target_rows = table_rows(targets)
    assert target_rows.pop("quantity") == ["measured", "target", "met"]
    assert target_rows and all(len(c) == 3 for c in target_rows.values()), target_rows
    rows = table_rows(out)
    header = rows["optimizer"]
    col = {name: i for i, name in enumerate(header)}
    names = ["adamw (optax)", "shampoo", "shampoo statistics_freq=F",
             "shampoo max_merged_dim=4096", "sketchy r128 fd=svd"]  # fmt: skip
    assert f"## toy: 2 tensors, {TOY_PARAMS:,} parameters" in out
    assert set(names) <= set(rows) and not any(n.startswith("ref") for n in rows)
    for name in names:
        for key in ("compile s", "steady ms", "refresh ms", "amortized ms"):
            value = float(rows[name][col[key]])
            assert math.isfinite(value) and value >= 0, (name, key, value)
    assert rows["adamw (optax)"][col["compile / adamw"]] == "1.00"
    assert rows["shampoo"][col["refresh / shampoo"]] == "1.00"
    # Second moments in float32 words per parameter, by hand: Adam's nu (one per
    # parameter); Shampoo's two factors of the 16 x 8 matrix (16^2 + 8^2) and as many
    # inverse roots (the bias is graft-only); Sketchy at rank 128 >= d keeps every
    # direction: d k + k + 1 per factor with k = d.
    second = col["2nd-moment B/param/4"]
    shampoo = 2 * (16**2 + 8**2) / TOY_PARAMS
    expected = {
        "adamw (optax)": 1.0,
        "shampoo": shampoo,
        "shampoo statistics_freq=F": shampoo,
        "shampoo max_merged_dim=4096": shampoo,  # 16 x 8 stays a matrix
        "sketchy r128 fd=svd": (16 * 16 + 16 + 1 + 8 * 8 + 8 + 1) / TOY_PARAMS,
    }
    for name, words in expected.items():
        assert rows[name][second] == f"{words:.2f}", name
    # Adam's whole state: mu and nu, and one int32 step count.
    assert (
        rows["adamw (optax)"][col["state B/param/4"]] == f"{(2 * TOY_PARAMS + 1) / TOY_PARAMS:.2f}"
    )

    # The refresh scaling table: every method at both sizes, and a fitted exponent.
    scaling = table_rows(refresh)
    assert scaling.pop("method") == ["d=16", "d=32", "a"]
    assert set(scaling) == {
        "shampoo (eigh root)", "sketchy fd=eigh", "sketchy fd=svd", "sketchy chunk=4"
    }  # fmt: skip
    for name, cells in scaling.items():
        assert len(cells) == 3, (name, cells)
        assert all(math.isfinite(float(c)) for c in cells), (name, cells)
        assert all(float(c) > 0 for c in cells[:2]), (name, cells)


@pytest.mark.slow  # three ResNet train steps compile: 3-11 min on 2 shared cores
def test_workload_step_benchmark_on_a_tiny_resnet(tmp_path_factory):
    from workloads.imagenet import mini_dataset

    data_dir = tmp_path_factory.getbasetemp() / "imagenet_data"  # shared by test files
    mini_dataset.prepare(data_dir, progress=False)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "workload_step.py"), "--workload", "imagenet",
         "--size", "tiny", "--image_size", "16", "--batch_size", "8", "--rank", "8",
         "--cycles", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "SKETCHY_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = table_rows(out.stdout)
    assert {"adamw (optax)", "shampoo", "sketchy r8"} <= set(rows)
    assert rows["adamw (optax)"][4] == "1.00"  # amortized step / AdamW's
    for name in ("adamw (optax)", "shampoo", "sketchy r8"):
        cells = [float(c) for c in rows[name]]
        assert all(math.isfinite(c) and c >= 0 for c in cells), (name, cells)
    # Optimizer words per parameter: Adam's mu and nu (plus a count); the preconditioned
    # optimizers keep more (graft, momentum, factors).
    adam_words = float(rows["adamw (optax)"][5])
    assert 2.0 <= adam_words < 2.01
    assert float(rows["shampoo"][5]) > adam_words and float(rows["sketchy r8"][5]) > adam_words


def test_compile_floor_benchmark_on_toy_shapes(capsys):
    bench = load("compile_floor")
    bench.main(["--set", "toy", "--rounds", "2", "--rank", "4"])
    out = capsys.readouterr().out
    assert "## toy: 2 tensors, 136 parameters, rank 4" in out
    rows, parts = out.split("| part |")
    rows = table_rows(rows)
    assert rows.pop("update") == ["compile s per round", "/ adamw per round", "/ adamw median"]
    assert list(rows) == list(bench.optimizers(4))
    assert rows["adamw (optax)"][1:] == ["1.00, 1.00", "1.00"]
    adamw = [float(v) for v in rows["adamw (optax)"][0].split(", ")]
    for name, (seconds, per_round, median) in rows.items():
        values = [float(v) for v in seconds.split(", ")]
        assert len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values), name
        ratios = [float(v) for v in per_round.split(", ")]
        # Seconds are printed to 0.01 s: toy compiles take ~0.1 s, so allow 10%.
        expected = [v / a for v, a in zip(values, adamw, strict=True)]
        assert ratios == pytest.approx(expected, rel=0.1, abs=0.01), name
        assert float(median) == pytest.approx(sum(ratios) / 2, abs=0.006), name
    # Each part is the difference of two rows' medians, in the order the rows build up.
    part_rows = table_rows("| part |" + parts)
    part_rows.pop("part")
    medians = {name: float(cells[2]) for name, cells in rows.items()}
    assert list(part_rows) == [p for p, _, _ in bench.PARTS]
    for part, row, below in bench.PARTS:
        expected = medians[row] - (medians[below] if below else 0.0)
        assert float(part_rows[part][0]) == pytest.approx(expected, abs=0.011), part


def test_compile_floor_rows_remove_what_they_name():
    """The "no FD" rows never change Sketchy's factors (their statistics step is the no-op);
    the whole update does at its first step (count 0 runs the FD step). The "no apply" row
    has no matrix product left."""
    import jax
    import jax.numpy as jnp

    from sketchy.kronecker import KroneckerState

    bench = load("compile_floor")
    params = {"w": jnp.zeros((16, 8))}
    grads = {"w": jax.random.normal(jax.random.PRNGKey(0), (16, 8))}

    def factors_after_one_step(make):
        tx = make()
        _, state = tx.update(grads, tx.init(params), params)
        is_kron = lambda x: isinstance(x, KroneckerState)  # noqa: E731
        (kron,) = [s for s in jax.tree.leaves(state, is_leaf=is_kron) if is_kron(s)]
        return jax.tree.leaves(kron.factors)

    makers = bench.optimizers(rank=4)
    assert any(jnp.any(f != 0) for f in factors_after_one_step(makers["sketchy"]))
    for name in ("kronecker, no FD", "kronecker, no FD, no apply"):
        assert all(jnp.all(f == 0) for f in factors_after_one_step(makers[name])), name

    # The identity preconditioner leaves no matrix product in the update; Sketchy's applied
    # preconditioner (U^T y, U z per axis) does.
    def dots(make):
        tx = make()
        return str(jax.make_jaxpr(tx.update)(grads, tx.init(params), params)).count("dot_general")

    assert dots(makers["kronecker, no FD, no apply"]) == 0
    assert dots(makers["kronecker, no FD"]) > 0


def test_optimizer_step_rejects_a_tearfree_src_without_tearfree(tmp_path):
    bench = load("optimizer_step")
    (tmp_path / "precondition").mkdir()  # a checkout root, but no tearfree in it
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--sets", "toy", "--no-reference", "--tearfree-src", str(tmp_path)])
    message = str(exit_info.value.code)
    assert message.startswith("error: --tearfree-src") and "\n" not in message
    assert "no precondition/tearfree/optimizer.py" in message


@pytest.mark.skipif(
    not os.environ.get("SKETCHY_TEARFREE_SRC"),
    reason="needs SKETCHY_TEARFREE_SRC: a source checkout of google-research/precondition",
)
def test_optimizer_step_measures_tearfree_beside_ours(capsys):
    """With the authors' tearfree code (in no release, so only where a checkout is given):
    its rows, its state counted like ours, and the paired ratio of the small-set target."""
    bench = load("optimizer_step")
    bench.main(
        ["--sets", "toy", "--cycles", "1", "--no-reference", "--paired", "1", "--no-scaling",
         "--only", "adamw", "shampoo", "sketchy r128",
         "--tearfree-src", os.environ["SKETCHY_TEARFREE_SRC"]]
    )  # fmt: skip
    out = capsys.readouterr().out
    out, targets = out.split("## targets")
    rows = table_rows(out)
    col = {name: i for i, name in enumerate(rows["optimizer"])}
    assert {"ref tearfree shampoo", "ref tearfree sketchy r128"} <= set(rows)
    # Tearfree merges the 16 x 8 matrix into one axis of 128 (the bias is graft-only), kept
    # whole at rank 128: sketch 128 x 128 + 128 eigenvalues + tail, and the cached inverse
    # eigenvalues and tail (128 + 1), over the 136 parameters.
    words = (128 * 128 + 128 + 1 + 128 + 1) / TOY_PARAMS
    assert rows["ref tearfree sketchy r128"][col["2nd-moment B/param/4"]] == f"{words:.2f}"
    # Tearfree Shampoo: that axis' 128 x 128 statistic and root.
    words = 2 * 128 * 128 / TOY_PARAMS
    assert rows["ref tearfree shampoo"][col["2nd-moment B/param/4"]] == f"{words:.2f}"
    assert "| sketchy r128 amortized / ref tearfree sketchy r128 |" in out
    verdict = table_rows(targets)["small: sketchy r128 amortized / ref tearfree sketchy r128"]
    assert verdict[1:] == ["<= 0.7", "-"]  # the target names the small set, not toy
