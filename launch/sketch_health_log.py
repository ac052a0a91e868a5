"""The trainer's glue for :mod:`sketchy.sketch_health`: the summary logged beside the spectra
every ``trainer.spectra_every`` steps, and the one warning of a run whose sketches are too
small (``trainer.sketch_health.threshold`` / ``.patience``)."""

from pathlib import Path

import jax

from launch.errors import warn
from launch.metrics_log import read_metrics
from sketchy import sketch_health

DEFAULT_THRESHOLD, DEFAULT_PATIENCE = 0.5, 3


class SketchHealth:
    """``(opt_state, step) -> {name: value}``; warns once when the worst factor's escaped
    share exceeds ``threshold`` at ``patience`` checks in a row.

    The blocks' parameters are found once, up front, by
    :func:`sketchy.sketch_health.block_owners` (a probe costing one compile of the update),
    and only if the optimizer keeps sketches at all.
    """

    def __init__(self, tx, params, *, threshold=DEFAULT_THRESHOLD, patience=DEFAULT_PATIENCE):
        self.threshold, self.patience = threshold, patience
        self.streak, self.warned = 0, False
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
        paths = jax.tree_util.tree_flatten_with_path(shapes)[0]
        self.names = [jax.tree_util.keystr(p) for p, _ in paths]
        self.owners = None
        if sketch_health.has_sketches(jax.eval_shape(tx.init, shapes)):
            self.owners = sketch_health.block_owners(tx, shapes)

    @classmethod
    def from_config(cls, tcfg, tx, params) -> "SketchHealth | None":
        """From ``trainer.sketch_health`` (defaults when absent); ``None`` without spectra."""
        if not tcfg.get("spectra_every"):
            return None
        cfg = tcfg.get("sketch_health") or {}
        return cls(
            tx,
            params,
            threshold=cfg.get("threshold", DEFAULT_THRESHOLD),
            patience=cfg.get("patience", DEFAULT_PATIENCE),
        )

    def __call__(self, opt_state, step: int) -> dict:
        if self.owners is None:
            return {}
        out = sketch_health.health_summary(opt_state, self.owners, self.names)
        if self._check(out.get("escaped_share_max", 0.0)):
            warn(self.message(out, step))
        return out

    def replay(self, shares) -> None:
        """Restore the streak and the warned flag of a resumed run from the worst escaped
        shares it logged before (``spectra/escaped_share_max``, in step order), printing
        nothing: the warning comes once per run, not once per attempt."""
        for worst in shares:
            self._check(worst)

    def _check(self, worst: float) -> bool:
        """Count one check; True when it is the one that should warn."""
        self.streak = self.streak + 1 if worst > self.threshold else 0
        due = self.streak >= self.patience and not self.warned
        self.warned = self.warned or due
        return due

    def message(self, out: dict, step: int) -> str:
        d, k = int(out["escaped_share_max_dim"]), int(out["escaped_share_max_rank"])
        return (
            f"step {step}: sketch health: a factor of {out['escaped_share_max_path']} (dim {d}, "
            f"rank {k}) has {out['escaped_share_max']:.1%} of its spectral mass escaped from "
            f"the sketch, above trainer.sketch_health.threshold={self.threshold} for "
            f"{self.streak} checks in a row; try rank={sketch_health.suggest_rank(k, d)} "
            f"(rank >= {d} makes this factor's sketch exact)"
        )


def logged_shares(run_dir: Path, after: int, upto: int) -> list[float]:
    """The worst escaped shares ``run_dir``'s metrics log holds for steps in ``(after,
    upto]``, in step order (the last write per step wins): what :meth:`SketchHealth.replay`
    takes when a run resumes at ``upto``."""
    key = "spectra/escaped_share_max"
    by_step = {
        r["step"]: r[key] for r in read_metrics(run_dir) if key in r and after < r["step"] <= upto
    }
    return [by_step[s] for s in sorted(by_step)]
