"""Checks that turn bad input into one line naming the problem and the fix (``UserError``).

Run before anything is written: the command line (:func:`preflight`: override syntax and
config-group options, with the list of valid choices), the resolved config
(:func:`check_config`: types and ranges of the trainer and optimizer settings) and the run
directory (:func:`check_run_dir`, :func:`check_free_space`). :func:`data_file_of` finds the
data file behind a failed read, so that a corrupt or truncated cache is reported by name.
:class:`RunDirGuard` removes what a refused run created, so that bad input leaves nothing
half-written behind.
"""

import errno
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from launch.errors import UserError, warn

# Hydra's own command-line flags: the preflight leaves these invocations to Hydra.
_MULTIRUN_FLAGS = ("-m", "--multirun")
# What Hydra itself writes into its output directory before the job starts.
HYDRA_LITTER = frozenset({".hydra", "train.log"})


def one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split())


# ---- the command line ------------------------------------------------------------------


def group_options(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _shown(path: Path) -> str:
    """``path`` from the repository root (``configs/...``) when it is inside it."""
    path = Path(path).absolute()
    root = Path(__file__).resolve().parents[1]
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def preflight(argv: Sequence[str], config_dir: Path) -> str | None:
    """The one-line problem with a command line, or ``None``.

    Parses the overrides with Hydra's grammar, checks every value given to a config group
    (sweeps included) against the files of ``configs/<group>/``, then (single runs) composes
    the config, so that a bad key or an unknown option is one line, not Hydra's message.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    multirun = any(a in _MULTIRUN_FLAGS for a in argv)
    if any(a.startswith("-") and a not in _MULTIRUN_FLAGS for a in argv):
        return None  # --help, --cfg, --info, ...: Hydra's business
    overrides = [a for a in argv if a not in _MULTIRUN_FLAGS]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001 - any parse failure is bad input
        return (
            f"cannot parse the command line ({one_line(e)}): write each override as "
            f"KEY=VALUE, e.g. trainer.steps=100 optimizer=shampoo"
        )
    for o in parsed:
        group = o.key_or_group
        if group.startswith("hydra") or o.is_delete() or not (config_dir / group).is_dir():
            continue
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
        elif isinstance(o.value(), list):  # several options of one group: problem=[a,b]
            values = [str(v) for v in o.value()]
        else:
            values = [o.get_value_element_as_str()]
        options = group_options(config_dir, group)
        for v in values:
            if v in ("null", "None") or v in options:
                continue
            if not multirun and o.is_sweep_override():
                continue  # Hydra's compose below says that a sweep needs -m
            return (
                f"{group}={v} is not an option of the config group '{group}': "
                f"choose one of {', '.join(options)} ({_shown(config_dir / group)}/)"
            )
    if multirun:
        return None
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).absolute()), version_base="1.3"):
            compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except Exception as e:  # noqa: BLE001 - Hydra's config errors are bad input
        return one_line(e)
    finally:
        GlobalHydra.instance().clear()
    return None


# ---- the resolved config -----------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_int(key: str, value, *, minimum: int, example) -> None:
    name = key.rsplit(".", 1)[-1]
    if not _is_int(value):
        raise UserError(
            f"{key}={value!r} is not an integer: {name} must be an integer >= {minimum}; "
            f"use e.g. {key}={example}"
        )
    if value < minimum:
        raise UserError(
            f"{key}={value} is out of range: {name} must be an integer >= {minimum}; "
            f"use e.g. {key}={example}"
        )


def _check_real(key: str, value, *, interval: str, ok, example, why: str = "") -> None:
    if not _is_number(value):
        raise UserError(f"{key}={value!r} is not a number: use e.g. {key}={example}")
    if not math.isfinite(value) or not ok(value):
        raise UserError(
            f"{key}={value} is out of range{why}: use a value in {interval}, e.g. {key}={example}"
        )


# Optimizer settings checked wherever an optimizer config has them (None: the default).
_OPT_INTS = {  # key: (minimum, example)
    "rank": (1, 256),
    "block_size": (1, 1024),
    "update_freq": (1, 10),
    "statistics_freq": (1, 1),
    "max_precond_dim": (1, 4096),
    "max_merged_dim": (1, 1024),
    "fd_chunk": (1, 32),
    "start_preconditioning_step": (0, 10),
}
_OPT_REALS = {  # key: (interval, predicate, example)
    "b1": ("[0, 1)", lambda v: 0 <= v < 1, 0.9),
    "momentum": ("[0, 1)", lambda v: 0 <= v < 1, 0.9),
    "b2": ("(0, 1]", lambda v: 0 < v <= 1, 0.999),
    "eps": ("[0, inf)", lambda v: v >= 0, 1e-6),
    "graft_eps": ("[0, inf)", lambda v: v >= 0, 1e-8),
    "weight_decay": ("[0, inf)", lambda v: v >= 0, 0.0),
    "damping": ("[0, inf)", lambda v: v >= 0, 0.0),
}
_TRAINER_INTS = {
    "steps": (1, 1000),
    "batch_size": (1, 64),
    "eval_batch_size": (1, 256),
    "log_every": (1, 10),
    "eval_every": (0, 250),
    "checkpoint_every": (0, 250),
    "keep_checkpoints": (1, 2),
    "spectra_every": (0, 250),
    "spectra_top_k": (1, 32),
    "max_nonfinite_steps": (1, 10),
}


def check_config(cfg: Mapping) -> None:
    """Types and ranges of the settings every run has (resolved config as plain dicts)."""
    _check_int("seed", cfg.get("seed"), minimum=0, example=0)
    if "rank" in cfg:
        _check_int("rank", cfg["rank"], minimum=1, example=256)
    trainer = cfg.get("trainer") or {}
    for key, (minimum, example) in _TRAINER_INTS.items():
        if trainer.get(key) is not None or key in ("steps", "batch_size", "eval_batch_size"):
            _check_int(f"trainer.{key}", trainer.get(key), minimum=minimum, example=example)
    _check_sketch_health(trainer.get("sketch_health") or {})
    for key in ("eval_splits", "final_splits"):
        splits = trainer.get(key)
        if splits is not None and (
            isinstance(splits, str) or not all(isinstance(s, str) for s in splits)
        ):
            raise UserError(
                f"trainer.{key}={splits!r} must be a list of split names: use e.g. "
                f"trainer.{key}=[validation,test]"
            )
    optimizer = cfg.get("optimizer") or {}
    if "learning_rate" in optimizer:
        _check_real(
            "optimizer.learning_rate",
            optimizer["learning_rate"],
            interval="(0, inf) (it is the schedule's peak; a negative rate climbs the loss)",
            ok=lambda v: v > 0,
            example=1e-3,
        )
    for key, (minimum, example) in _OPT_INTS.items():
        if optimizer.get(key) is not None:
            _check_int(f"optimizer.{key}", optimizer[key], minimum=minimum, example=example)
    for key, (interval, ok, example) in _OPT_REALS.items():
        if optimizer.get(key) is not None:
            _check_real(
                f"optimizer.{key}", optimizer[key], interval=interval, ok=ok, example=example
            )
    if optimizer.get("exponent_override") is not None:
        _check_real(
            "optimizer.exponent_override",
            optimizer["exponent_override"],
            interval="(0, 1] or null",
            ok=lambda v: 0 < v <= 1,
            example=0.25,
        )
    axes = (cfg.get("mesh") or {}).get("axes") or {}
    for name, size in axes.items():
        if not _is_int(size):
            raise UserError(
                f"mesh.axes.{name}={size!r} is not an integer: use a device count or -1 "
                f"(all devices), e.g. mesh.axes.{name}=-1"
            )


def _check_sketch_health(health: Mapping) -> None:
    """``trainer.sketch_health``: ``threshold`` in (0, 1], ``patience`` an integer >= 1."""
    if health.get("threshold") is not None:
        _check_real(
            "trainer.sketch_health.threshold",
            health["threshold"],
            interval="(0, 1] (an escaped share; 1 never warns)",
            ok=lambda v: 0 < v <= 1,
            example=0.5,
        )
    if health.get("patience") is not None:
        _check_int("trainer.sketch_health.patience", health["patience"], minimum=1, example=3)


def warn_full_rank(rank, opt_state) -> None:
    """One warning line when a sketch of ``rank`` keeps every factor whole (Shampoo's memory).

    Looks at the sketches of the (abstract) optimizer state: ``eigvecs`` of shape
    ``(..., d, min(d, rank))``.
    """
    import jax

    dims = [
        leaf.shape[-2]
        for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
        if "eigvecs" in jax.tree_util.keystr(path) and len(leaf.shape) >= 2
    ]
    if _is_int(rank) and dims and rank >= max(dims):
        warn(
            f"rank={rank} is at least every preconditioned dimension of this model "
            f"(largest: {max(dims)}): every sketch keeps its whole factor, i.e. Shampoo's "
            f"statistics memory; use rank < {max(dims)} to save memory"
        )


# ---- the run directory --------------------------------------------------------------------


def check_run_dir(run_dir: Path) -> None:
    """``run_dir`` is (or can be made) a writable directory."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(
            f"run_dir={run_dir} is an existing file, not a directory: pass a directory "
            f"(it is created when missing), e.g. run_dir=runs/my_run"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(
            f"run_dir={run_dir} is not writable ({e.strerror or one_line(e)}): pass a "
            f"directory you can write to, e.g. run_dir=runs/my_run"
        ) from e


def check_free_space(run_dir: Path, state_bytes: int, keep: int) -> None:
    """Refuse to start when ``keep + 1`` checkpoints of the state cannot fit on the disk."""
    need = (keep + 1) * state_bytes + 16 * 2**20
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise UserError(
            f"run_dir={run_dir} has {free / 2**20:.1f} MiB free but {keep + 1} checkpoints "
            f"of this run need about {need / 2**20:.1f} MiB: free disk space, lower "
            f"trainer.keep_checkpoints or pass a run_dir on another disk"
        )


def disk_full(error: BaseException) -> str | None:
    """The ``ENOSPC`` error (as text) anywhere in ``error``'s cause/context chain, or None.

    Orbax's background writes re-raise their failures wrapped in other exceptions."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return one_line(error)
        if "No space left on device" in str(error):
            return one_line(error)[:200]
        error = error.__cause__ or error.__context__
    return None


class RunDirGuard:
    """Remembers what a run directory held; :meth:`undo` removes what appeared since.

    Also removes Hydra's own output directory (``.hydra``, ``train.log``) when that is all
    it holds, so that a refused run leaves no empty run behind. Never touches what was
    there before (a run being resumed keeps its checkpoints and metrics).
    """

    def __init__(self, run_dir: Path, hydra_dir: Path | None = None):
        self.run_dir, self.hydra_dir = Path(run_dir), hydra_dir and Path(hydra_dir)
        self.before = self._entries(self.run_dir)
        if self.before is not None and self.before <= HYDRA_LITTER and self._is_hydra_dir():
            self.before = None  # created by Hydra for this very run

    def _is_hydra_dir(self) -> bool:
        return self.hydra_dir is not None and self.hydra_dir.absolute() == self.run_dir.absolute()

    @staticmethod
    def _entries(d: Path) -> set[str] | None:
        try:
            return set(os.listdir(d)) if d.is_dir() else None
        except OSError:
            return None

    def undo(self) -> None:
        now = self._entries(self.run_dir)
        if now is not None:
            if self.before is None:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            else:
                for name in now - self.before:
                    path = self.run_dir / name
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
        if self.hydra_dir is not None and not self._is_hydra_dir():
            left = self._entries(self.hydra_dir)
            if left is not None and left <= HYDRA_LITTER:
                shutil.rmtree(self.hydra_dir, ignore_errors=True)


# ---- data files ------------------------------------------------------------------------------


def _as_file(value) -> Path | None:
    try:
        if isinstance(value, str | os.PathLike) and len(os.fspath(value)) < 4096:
            path = Path(value)
        elif isinstance(getattr(value, "filename", None), str):  # zipfile.ZipFile
            path = Path(value.filename)
        elif isinstance(getattr(value, "name", None), str) and hasattr(value, "read"):
            path = Path(value.name)  # open file objects
        elif hasattr(value, "fid") and isinstance(getattr(value.fid, "name", None), str):
            path = Path(value.fid.name)  # numpy's NpzFile
        else:
            return None
        if path.suffix in (".py", ".pyc", ".so") or not path.is_file():
            return None
        return path.absolute()
    except (OSError, ValueError, TypeError):
        return None


def data_file_of(error: BaseException, roots: Sequence[str | os.PathLike] = ()) -> Path | None:
    """The data file the failed read was reading: the innermost file named by a local
    variable of the traceback (under one of ``roots`` when given), else ``None``."""
    roots = [Path(r).expanduser().absolute() for r in roots if r]
    found = None
    tb = error.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            path = _as_file(value)
            if path is not None and (not roots or any(path.is_relative_to(r) for r in roots)):
                found = path
        tb = tb.tb_next
    return found
