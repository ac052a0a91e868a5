"""The two online-convex protocols; each problem config names one as its ``run``.

A run yields ``(name, record, summary)`` per (optimizer, sketch size[, grid set]): the record's
file stem, its fields and a line for the console. Protocol (paper Appendix A): one online pass
in float64, intercept appended, ``w_1 = 0``; each optimizer tuned on its grid (the Cartesian
product of the grids it lists) by the final cumulative average log loss; curves of the
cumulative average log and 0-1 losses at about ``num_obs`` points. Observation 2:
``f_t(x) = <x, g_t>`` over the ball of radius ``R``, ``g_t = eps_t v_{i_t}`` with ``v_i`` one
of ``r`` orthonormal vectors and a random sign (``signed``; unsigned: ``eps_t = 1``); the
regret at each horizon ``T`` is averaged over seeds and tuned per ``T`` (on all seeds, and
cross-fitted between two halves of the seeds) or once for all ``T`` (cross-fitted);
exponents are log-log slopes over ``T``.
"""

import functools
import time
from collections.abc import Iterator

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

from launch.oco_tuning import cross_fit, hparam_grid, pick, rounded
from sketchy.oco import online


def sketch_label(rank) -> str:
    return "full" if rank is None else f"rank{rank}"


def _settings(problem: DictConfig, optimizer: DictConfig, dimension: int):
    """``(rank, grid set)`` pairs to run: every sketch size below the dimension (``None``:
    unsketched) times the grid sets the problem asks for (``null``: all the optimizer lists)."""
    ranks = [k for k in problem.sketch_ranks if k < dimension] if optimizer.sketched else [None]
    sets = problem.grid_sets or list(optimizer.tune)
    return [(rank, name) for rank in ranks for name in sets]


def _too_big(name: str, optimizer: DictConfig, dimension: int) -> bool:
    limit = optimizer.get("max_dimension")
    if limit and dimension > limit:
        print(f"  skip {name}: dimension {dimension} > {limit}", flush=True)
        return True
    return False


def _grid(optimizer: DictConfig, grid_set: str, cfg: DictConfig) -> dict[str, np.ndarray]:
    grids = OmegaConf.to_container(cfg.sweep, resolve=True)
    return hparam_grid(dict(optimizer.tune[grid_set]), grids)


def _make_tx(optimizer: DictConfig, rank, **kwargs):
    """The optimizer as a function of its tuned hyperparameters (learning rate, delta)."""
    if rank is not None:  # a sketched method: its sketch size is fixed, not tuned
        kwargs["rank"] = rank
    return functools.partial(hydra.utils.instantiate(optimizer.optimizer), **kwargs)


def logistic_regression(
    name: str, problem: DictConfig, optimizers: DictConfig, cfg: DictConfig
) -> Iterator[tuple[str, dict, str]]:
    """Appendix A: one-pass online logistic regression on ``problem.data``."""
    x, y, info = hydra.utils.instantiate(problem.data)
    print(f"[{name}] {info['examples']} examples, {info['features']} features", flush=True)
    n, dimension = x.shape
    for alg, optimizer in optimizers.items():
        if _too_big(alg, optimizer, dimension):
            continue
        for rank, grid_set in _settings(problem, optimizer, dimension):
            grid = _grid(optimizer, grid_set, cfg)
            start = time.perf_counter()
            losses, errors = online.run_logistic(
                _make_tx(optimizer, rank), {k: jnp.asarray(v) for k, v in grid.items()}, x, y
            )
            losses, errors = np.asarray(losses), np.asarray(errors)
            wall = time.perf_counter() - start
            final = losses.sum(1) / n
            best = int(np.nanargmin(np.where(np.isfinite(final), final, np.inf)))
            obs = np.unique(np.round(np.linspace(1, n, cfg.num_obs)).astype(int))
            seen = obs.astype(float)
            record = {
                "experiment": "oco_appendix_a",
                "dataset": name,
                "algorithm": alg,
                "rank": rank,
                "sketch_size": None if rank is None else rank + 1,  # the paper's l
                "data": info,
                "best_hparams": {k: float(v[best]) for k, v in grid.items()},
                "final": {
                    "log_loss": float(final[best]),
                    "zero_one_loss": float(errors[best].sum() / n),
                },
                "curves": {
                    "examples": obs.tolist(),
                    "log_loss": rounded(np.cumsum(losses[best])[obs - 1] / seen),
                    "zero_one_loss": rounded(np.cumsum(errors[best])[obs - 1] / seen),
                },
                "grid": {
                    **{k: rounded(v) for k, v in grid.items()},
                    "final_log_loss": rounded(final),
                },
                "wall_time_s": round(wall, 2),
            }
            summary = (
                f"  {alg:13s} {sketch_label(rank):7s} log loss {record['final']['log_loss']:.4f} "
                f"0-1 {record['final']['zero_one_loss']:.4f} {record['best_hparams']} "
                f"{wall:.1f}s"
            )
            yield f"{name}__{alg}__{sketch_label(rank)}", record, summary


def linear_regret(
    name: str, problem: DictConfig, optimizers: DictConfig, cfg: DictConfig
) -> Iterator[tuple[str, dict, str]]:
    """Observation 2: tuned regret at each horizon on linear losses, and fitted exponents.

    Regret at ``T`` = ``sum_{t<=T} <x_t, g_t> + R ||sum_{t<=T} g_t||`` (best point of the ball
    of radius ``R`` in hindsight). The second term, the "comparator term", is the same for
    every algorithm; on the signed instance it is also every algorithm's expected regret.
    Three tunings are recorded: per horizon on all seeds (``tuned_regret``, as in the paper's
    "tuned lr and delta"; optimistic), per horizon cross-fitted (``heldout_regret``) and one
    setting for all horizons, cross-fitted (``fixed_regret``).
    """
    p = problem
    if p.seeds < 2:
        raise ValueError(f"problem.{name}.seeds must be >= 2 (two folds), got {p.seeds}")
    horizons = np.geomspace(p.min_horizon, p.max_horizon, p.num_horizons)
    horizons = np.unique(np.round(horizons).astype(int))  # round: geomspace lands on 2^k - eps
    dimension = p.d or p.r
    print(
        f"[{name}] signed={p.signed} r={p.r} d={p.d} T<={p.max_horizon} seeds={p.seeds}",
        flush=True,
    )
    instance = {k: v for k, v in OmegaConf.to_container(p, resolve=True).items() if k != "run"}
    for alg, optimizer in optimizers.items():
        if _too_big(alg, optimizer, dimension):
            continue
        for rank, grid_set in _settings(problem, optimizer, dimension):
            grid = _grid(optimizer, grid_set, cfg)
            make_tx = _make_tx(optimizer, rank, radius=p.radius)
            start = time.perf_counter()
            regrets, comparator = [], []
            for seed in range(p.seeds):
                grads = online.observation2_gradients(
                    jax.random.key(seed), int(horizons[-1]), p.r, p.d, jnp.float64, signed=p.signed
                )
                hp = {k: jnp.asarray(v) for k, v in grid.items()}
                regret = online.run_linear_regret(make_tx, hp, grads, p.radius, horizons)
                regrets.append(np.asarray(regret))
                sums = np.cumsum(np.asarray(grads), axis=0)[horizons - 1]
                comparator.append(p.radius * np.linalg.norm(sums, axis=1))
            wall = time.perf_counter() - start
            runs = (np.stack(regrets), np.stack(comparator), wall)
            yield _regret_record(
                name, alg, optimizer, rank, grid_set, grid, instance, horizons, runs
            )


def _regret_record(
    name, alg, optimizer, rank, grid_set, grid, instance, horizons, runs
) -> tuple[str, dict, str]:
    regrets, comparator, wall = runs  # [seeds, H, horizons], [seeds, horizons], seconds
    best = pick(regrets.mean(axis=0), per_horizon=True)
    tuned = regrets.mean(axis=0)[best, np.arange(len(horizons))]
    heldout = cross_fit(regrets, per_horizon=True)
    fixed = cross_fit(regrets, per_horizon=False)
    # The algorithm's own cumulative loss sum_t <x_t, g_t> under the cross-fitted per-T
    # tuning: mean and standard error over seeds (expected value 0 on the signed instance).
    own = heldout - comparator
    record = {
        "experiment": "oco_observation2",
        "dataset": name,
        "algorithm": alg,
        "rank": rank,
        "sketch_size": None if rank is None else rank + 1,
        "grid_name": grid_set,
        "instance": instance,
        "horizons": horizons.tolist(),
        "tuned_regret": rounded(tuned),
        "best_hparams": [{k: float(v[b]) for k, v in grid.items()} for b in best],
        "exponent": online.fit_exponent(horizons, tuned),
        "heldout_regret": rounded(heldout.mean(axis=0)),
        "heldout_exponent": online.fit_exponent(horizons, heldout.mean(axis=0)),
        "fixed_regret": rounded(fixed.mean(axis=0)),
        "fixed_exponent": online.fit_exponent(horizons, fixed.mean(axis=0)),
        "heldout_own_loss": rounded(own.mean(axis=0)),
        "heldout_own_loss_se": rounded(own.std(axis=0, ddof=1) / np.sqrt(len(own))),
        "comparator_term": rounded(comparator.mean(axis=0)),
        "comparator_exponent": online.fit_exponent(horizons, comparator.mean(axis=0)),
        "theory_exponent": optimizer.get("theory_exponent"),
        "wall_time_s": round(wall, 2),
    }
    summary = (
        f"  {alg:13s} {sketch_label(rank):7s} {grid_set:10s} exponent {record['exponent']:.3f} "
        f"held-out {record['heldout_exponent']:.3f} fixed {record['fixed_exponent']:.3f} "
        f"(theory {record['theory_exponent']}; comparator term "
        f"{record['comparator_exponent']:.3f}) {wall:.1f}s"
    )
    return f"{name}__{alg}__{sketch_label(rank)}__{grid_set}", record, summary
