"""``rank_auto`` in the trainer: warm up at ``rank``, allocate per-factor ranks within the
budget, cut the sketches, recompile, and resume exactly across the switch."""

import json

import jax
import numpy as np
import pytest
from conftest import compose_config
from test_training_runs import params_of, run

from launch.errors import UserError
from launch.rank_auto import intrinsic_dim
from sketchy.rank_budget import FactorSpectrum

AUTO = "rank_auto={warmup_steps:3,budget_rank:2}"


def common(smoke_overrides):
    return [o for o in smoke_overrides if not o.startswith("run_dir")] + [
        "optimizer=sketchy",
        "rank=8",
        "schedule=constant",
        "trainer.checkpoint_every=2",
        "trainer.keep_checkpoints=10",
        AUTO,
    ]


def sketch_ranks(state) -> list[int]:
    """The rank (``eigvecs`` columns) of every stacked sketch in a restored state."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return [int(x.shape[-1]) for p, x in leaves if jax.tree_util.keystr(p).endswith("['eigvecs']")]


def test_switch_cuts_ranks_within_budget_and_resumes_exactly(smoke_overrides, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    records = [f"record_dir={tmp_path / 'records'}", "experiment_name=auto"]
    final = run(
        compose_config(
            [*common(smoke_overrides), *records, "trainer.steps=6", f"run_dir={straight}"]
        )
    )
    saved = json.loads((straight / "factor_ranks.json").read_text())
    record = json.loads(open(final["record"]).read())
    assert record["rank_auto"]["factor_ranks"] == saved["factor_ranks"]
    words = record["curves"]["optimizer/bytes_per_param_statistics"]
    assert words[-1][0] == 3 and words[-1][1] < words[0][1]  # logged again at the switch
    assert saved["step"] == 3
    assert 0 < saved["used_words"] <= saved["budget_words"]
    dims = saved["intrinsic_dims"]
    assert set(dims) == set(saved["ranks"]) and all(1.0 <= v for v in dims.values()), dims
    ranks = [r for rs in saved["factor_ranks"].values() for r in rs]
    assert min(ranks) >= 1 and max(ranks) <= 8 and len(set(ranks)) > 1, saved["factor_ranks"]
    before, after = params_of(straight, 2), params_of(straight, 6)
    assert max(sketch_ranks(before["opt_state"])) == 8
    assert max(sketch_ranks(after["opt_state"])) < 8  # cut: no factor kept the warm-up rank

    # Stopped at step 4 (after the switch), resumed to 6: equal to the straight run.
    run(compose_config([*common(smoke_overrides), "trainer.steps=4", f"run_dir={resumed}"]))
    run(compose_config([*common(smoke_overrides), "trainer.steps=6", f"run_dir={resumed}"]))
    b = params_of(resumed, 6)
    for x, y in zip(jax.tree.leaves(after), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rank_auto={warmup_steps:0,budget_rank:2}", "rank_auto.warmup_steps=0"),
        ("rank_auto={warmup_steps:3}", "exactly one of budget_rank"),
        ("rank_auto={warmup_steps:3,budget_rank:64}", "rank_auto.budget_rank=64"),
        ("rank_auto={warmup_steps:3,budget_rnk:4}", r"unknown settings \['budget_rnk'\]"),
    ],
)
def test_bad_settings_are_one_line(smoke_overrides, override, message):
    cfg = compose_config([*smoke_overrides, "optimizer=sketchy", "rank=8", override])
    with pytest.raises(UserError, match=message):
        run(cfg)


def test_only_for_sketchy(smoke_overrides):
    cfg = compose_config([*smoke_overrides, "optimizer=shampoo", AUTO])
    with pytest.raises(UserError, match="optimizer=sketchy"):
        run(cfg)


def test_intrinsic_dim_reads_the_sketch_with_its_tail():
    """``tr(Gbar + tail I) / lambda_max``, block by block, then the mean: d = 10, kept
    eigenvalues (4, 2, 1) and tail 0.5 -> (4.5 + 2.5 + 1.5 + 7 x 0.5) / 4.5; a block of
    (2, 2, 2) without tail -> 3."""
    spec = FactorSpectrum(
        d=10,
        nblocks=2,
        eigvals=np.array([[4.0, 2.0, 1.0], [2.0, 2.0, 2.0]]),
        tail=np.array([0.5, 0.0]),
    )
    assert intrinsic_dim(spec) == pytest.approx(((12.0 / 4.5) + 3.0) / 2)
    one = FactorSpectrum(d=3, nblocks=1, eigvals=np.array([1.0, 0.0, 0.0]), tail=np.array(0.0))
    assert intrinsic_dim(one) == pytest.approx(1.0)
