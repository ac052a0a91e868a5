"""Tuning of the online-convex runs: grids, the choice of a setting, cross-fitting.

Every grid point runs in one vmapped pass (``sketchy.oco.online``); tuning then only picks
rows of the resulting loss or regret arrays.
"""

import itertools

import numpy as np


def hparam_grid(tune: dict, grids: dict) -> dict[str, np.ndarray]:
    """``{name: [H]}``: the Cartesian product of the named grids (``{low, high, num}``, log)."""
    names = list(tune)
    axes = [
        np.geomspace(grids[tune[n]]["low"], grids[tune[n]]["high"], grids[tune[n]]["num"])
        for n in names
    ]
    points = list(itertools.product(*axes))
    return {n: np.array([p[i] for p in points]) for i, n in enumerate(names)}


def rounded(values, digits: int = 6) -> list:
    """JSON-friendly values: ``digits`` significant digits, ``None`` where not finite."""
    return [None if not np.isfinite(v) else float(f"{v:.{digits}g}") for v in np.asarray(values)]


def pick(mean: np.ndarray, per_horizon: bool) -> np.ndarray:
    """Grid index chosen from ``mean`` (``[H, horizons]`` mean regrets; non-finite = worst):
    the best at each horizon (tuned per ``T``), or one setting for every horizon, the one with
    the smallest sum over horizons of ``log(regret)`` (regret within a constant factor of the
    per-``T`` best across the whole range, not just at ``T_max``)."""
    mean = np.where(np.isfinite(mean), mean, np.inf)
    if per_horizon:
        return mean.argmin(axis=0)
    score = np.log(np.maximum(mean, 1e-300)).sum(axis=1)
    return np.full(mean.shape[1], int(np.argmin(score)))


def cross_fit(regrets: np.ndarray, per_horizon: bool) -> np.ndarray:
    """``[seeds, horizons]`` regret of each seed under the setting tuned on the *other* half
    of the seeds (even / odd seeds, two folds): an unbiased estimate of the tuned method's
    expected regret, free of the optimism of picking the best of ``H`` noisy settings on the
    very seeds it is scored on (which matters here: on the signed instance all settings have
    the same expected regret and in-sample tuning only selects noise)."""
    folds = [np.arange(regrets.shape[0]) % 2 == f for f in (0, 1)]
    cols = np.arange(regrets.shape[2])
    out = np.empty((regrets.shape[0], regrets.shape[2]))
    for tune, held in (folds, folds[::-1]):
        best = pick(regrets[tune].mean(axis=0), per_horizon)
        out[held] = regrets[held][:, best, cols]
    return out
