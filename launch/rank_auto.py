"""``rank_auto``: Sketchy's per-factor ranks chosen under a memory budget, after a warm-up.

The run starts with every factor at ``rank`` (a generous warm-up rank). After
``rank_auto.warmup_steps`` steps, each factor's sketch spectrum (its own blocks) goes to
:func:`sketchy.rank_budget.allocate_ranks`, which spends the budget where a direction
captures the largest share of its factor's trace per word; the sketches are cut to their
ranks by :func:`sketchy.rank_resize.resize_state` (FD's guarantee kept: the cut mass moves
into the tail), and the step is compiled once more for the new shapes. The budget is the
sketch memory of uniform rank ``rank_auto.budget_rank`` (the comparison the rank ablation
makes) or ``rank_auto.budget_words_per_param`` second-moment words per parameter.

Resuming: the chosen ranks are written to ``<run_dir>/factor_ranks.json`` only after the
first checkpoint with the new shapes is on disk, so a run that finds the file restores onto
the allocated layout, and one that does not (stopped before the switch) repeats it.
"""

import inspect
import json
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from launch.atomic import write_json
from launch.errors import UserError
from sketchy import rank_budget, rank_resize

RANKS_FILE = "factor_ranks.json"


class RankAuto(NamedTuple):
    warmup_steps: int
    budget_rank: int | None
    budget_words_per_param: float | None


def settings(cfg, make_optimizer) -> RankAuto | None:
    """The validated ``rank_auto`` settings (``None``: every factor at ``rank``)."""
    ra = cfg.get("rank_auto")
    if ra is None:
        return None
    if "factor_ranks" not in inspect.signature(make_optimizer).parameters:
        raise UserError(
            "rank_auto chooses Sketchy's per-factor ranks: use optimizer=sketchy or unset rank_auto"
        )
    example = "rank_auto={warmup_steps:100,budget_rank:16}"
    known = ("warmup_steps", "budget_rank", "budget_words_per_param")
    unknown = sorted(set(ra) - set(known))
    if unknown:
        raise UserError(f"rank_auto has unknown settings {unknown} (known: {', '.join(known)})")
    steps, rank, words = (ra.get(k) for k in known)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps < cfg.trainer.steps:
        raise UserError(
            f"rank_auto.warmup_steps={steps!r} must be an integer in [1, trainer.steps="
            f"{cfg.trainer.steps}): use e.g. {example}"
        )
    if (rank is None) == (words is None):
        raise UserError(
            f"rank_auto needs exactly one of budget_rank, budget_words_per_param: {example}"
        )
    warmup_rank = cfg.optimizer.get("rank")
    if rank is not None and (not isinstance(rank, int) or not 1 <= rank <= (warmup_rank or 0)):
        raise UserError(
            f"rank_auto.budget_rank={rank!r} must be an integer in [1, optimizer.rank="
            f"{warmup_rank}] (the warm-up rank): use e.g. {example}"
        )
    if words is not None and not (isinstance(words, int | float) and words > 0):
        raise UserError(f"rank_auto.budget_words_per_param={words!r} must be > 0: use e.g. 0.5")
    return RankAuto(steps, rank, None if words is None else float(words))


def load(run_dir: Path) -> dict | None:
    """The ranks a previous attempt of this run switched to, if it got that far."""
    path = Path(run_dir) / RANKS_FILE
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    return {p: tuple(r) for p, r in saved["factor_ranks"].items()}


def save(run_dir: Path, step: int, factor_ranks: dict, summary: dict) -> None:
    write_json(
        Path(run_dir) / RANKS_FILE,
        {"step": step, "factor_ranks": {p: list(r) for p, r in factor_ranks.items()}} | summary,
    )


def switch(ra: RankAuto, opt_state, params, options: dict) -> tuple[dict, object, dict]:
    """``(factor_ranks, new opt_state, summary)``: ranks allocated from the warm-up state
    (host arrays) within the budget, and the state cut to them (re-shard it afterwards).
    ``options``: the optimizer's arguments (its layout and warm-up ``rank``)."""
    options = {k: v for k, v in options.items() if k not in ("factor_ranks", "block_sharding")}
    specs = rank_resize.factor_spectra(opt_state, params, **options)
    if ra.budget_rank is not None:
        budget = rank_budget.budget_of_uniform_rank(specs, ra.budget_rank)
    else:
        n_params = sum(x.size for x in jax.tree.leaves(params))
        budget = int(ra.budget_words_per_param * n_params)
    try:
        ranks = rank_budget.allocate_ranks(specs, budget, max_rank=options["rank"])
    except ValueError as e:
        raise UserError(f"rank_auto: {e}: raise the budget") from None
    summary = {
        "budget_words": budget,
        "used_words": sum(rank_budget.rank_cost(specs[key], r) for key, r in ranks.items()),
        "captured_share": rank_budget.captured_mass(specs, ranks),
        "ranks": {f"{p} axis {a}": r for (p, a), r in sorted(ranks.items())},
        "intrinsic_dims": {
            f"{p} axis {a}": intrinsic_dim(spec) for (p, a), spec in sorted(specs.items())
        },
    }
    factor_ranks = rank_resize.as_factor_ranks(ranks)
    return (
        factor_ranks,
        rank_resize.resize_state(opt_state, params, factor_ranks, **options),
        summary,
    )


def intrinsic_dim(spec: rank_budget.FactorSpectrum) -> float:
    """The factor's intrinsic dimension ``tr C / lambda_max`` at the switch, mean over its
    blocks, with ``C = Gbar + tail I`` the warm-up sketch (as the spectra log reads a
    sketch): ``(sum lam + d tail) / (lam_1 + tail)``, 0 for an empty sketch. What its
    allocated rank is read against."""
    lam = np.asarray(spec.eigvals, np.float64).reshape(-1, np.shape(spec.eigvals)[-1])
    tail = np.asarray(spec.tail, np.float64).reshape(-1)
    top = lam.max(axis=1) + tail
    trace = lam.sum(axis=1) + spec.d * tail
    return float(np.mean(np.where(top > 0, trace / np.where(top > 0, top, 1.0), 0.0)))


def metrics(summary: dict) -> dict:
    """What the switch logs besides the new state's memory: budget, words used, captured
    share, smallest and largest rank."""
    out = {f"rank_auto/{k}": summary[k] for k in ("budget_words", "used_words", "captured_share")}
    ranks = list(summary["ranks"].values())
    return out | {"rank_auto/rank_min": min(ranks), "rank_auto/rank_max": max(ranks)}


def record_fields(run_dir: Path) -> dict:
    """``{"rank_auto": <the ranks file>}`` for the run record, when the run switched."""
    path = Path(run_dir) / RANKS_FILE
    return {"rank_auto": json.loads(path.read_text())} if path.exists() else {}
