"""Orbax checkpoints of the whole training state, with automatic resume from the run dir.

What is saved: parameters, optimizer state, model state, step, RNG key and (implicitly,
through ``step``) the position of the deterministic data iterator, plus a small JSON of
run metadata, which includes the *signature* of the state (a digest of every array's
path, shape and dtype for parameters, model state and optimizer state) and an exact
checksum of its bits. Restoring uses the abstract train state (shapes, dtypes and
shardings), so optimizer NamedTuples and mesh shardings come back exactly as they were.

Reliability (:meth:`Checkpointer.restore_newest_valid`): a checkpoint whose signature
differs belongs to another model or optimizer and is refused with one line (``UserError``);
an unreadable one (truncated or garbage files, a checksum that does not match, a kill
during its write) is moved to ``checkpoints_corrupt/`` with one warning line and the
previous one is restored. Orbax writes each step into a temporary directory and renames it
when complete, so a kill during a write leaves at most such a temporary directory, which is
never restored.
"""

import contextlib
import functools
import hashlib
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from launch.errors import UserError, warn

# What a signature mismatch in each part of the state means, for the error message.
_PARTS = {
    "params": "model (workload or model size)",
    "model_state": "model (workload or model size)",
    "opt_state": "optimizer or optimizer settings (e.g. optimizer, rank, block_size)",
}


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs unreadable metadata (with the file's bytes) through absl at ERROR level;
    our one warning line per unreadable checkpoint says it instead."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _digest(tree) -> str:
    rows = [
        f"{jax.tree_util.keystr(path)}:{tuple(leaf.shape)}:{leaf.dtype}"
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if hasattr(leaf, "shape")
    ]
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


# Version 1 (checkpoints written before it changed) weighted every other word by an even
# number, so the top bits of those words (a float's sign among them) were invisible.
CHECKSUM_VERSION = 2


@functools.partial(jax.jit, static_argnames="version")
def checksum(tree, version: int = CHECKSUM_VERSION) -> jax.Array:
    """An exact, position-weighted uint32 sum of every bit of ``tree`` (order of leaves and
    entries matters; the same on every machine): a restored state must reproduce it.

    Every word is multiplied by an odd weight, which is invertible modulo 2^32, so any change
    of a single word (any flipped bit) changes the sum.
    """
    total = jnp.uint32(0)
    for i, leaf in enumerate(jax.tree.leaves(tree)):
        x = jnp.asarray(leaf)
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if x.dtype == jnp.bool_:
            u = x.astype(jnp.uint32)
        elif x.dtype.itemsize >= 4:  # 8-byte types become pairs of words
            u = jax.lax.bitcast_convert_type(x, jnp.uint32)
        else:
            narrow = {1: jnp.uint8, 2: jnp.uint16}[x.dtype.itemsize]
            u = jax.lax.bitcast_convert_type(x, narrow).astype(jnp.uint32)
        u = u.ravel()
        weights = jnp.arange(u.size, dtype=jnp.uint32) * jnp.uint32(2654435761)
        if version >= 2:
            weights = weights * jnp.uint32(2)  # even, so that with 2 i + 1 below: odd
        total = total + jnp.sum(u * (weights + jnp.uint32(2 * i + 1)), dtype=jnp.uint32)
    return total


def state_signature(state) -> dict[str, str]:
    """Digests of the layout (paths, shapes, dtypes) of each part of a (abstract) state."""
    parts = state._asdict() if hasattr(state, "_asdict") else {"state": state}
    return {name: _digest(part) for name, part in parts.items() if name in _PARTS}


class Checkpointer:
    """Thin wrapper over :class:`orbax.checkpoint.CheckpointManager` for one run directory."""

    def __init__(self, directory: Path, *, every: int, keep: int):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=max(every, 1), enable_async_checkpointing=True
        )
        with _quiet_orbax():  # reads every step's metadata
            self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict, *, force: bool = False) -> bool:
        """Save (when due, or ``force``) with ``meta`` plus the state's :func:`checksum`."""
        if not (force or self.manager.should_save(step)):
            return False
        meta = meta | {"checksum": int(checksum(state)), "checksum_version": CHECKSUM_VERSION}
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=force,
        )

    def wait(self) -> None:
        """Block until the checkpoints being written in the background are on disk."""
        self.manager.wait_until_finished()

    def restore(self, abstract_state, step: int | None = None):
        """``(state, meta)`` of ``step`` (default: latest) onto ``abstract_state``'s layout."""
        step = self.latest_step() if step is None else step
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            ),
        )
        meta = dict(out.meta)
        saved = meta.pop("checksum", None)
        version = meta.pop("checksum_version", 1)  # absent: written by version 1
        if saved is not None and int(checksum(out.state, version)) != saved:
            raise ValueError(f"step {step}: the restored arrays do not match their checksum")
        return out.state, meta

    def read_meta(self, step: int) -> dict:
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out.meta)

    def restore_newest_valid(self, abstract_state, signature: dict | None = None):
        """``(state, meta, step)`` of the newest readable checkpoint, or ``None`` if none.

        A checkpoint whose ``meta["signature"]`` differs from ``signature`` raises
        ``UserError`` (another run's checkpoint: nothing is moved or restored). Unreadable
        checkpoints are moved to ``checkpoints_corrupt/`` (one warning line each) and the
        next older one is tried; if none is readable, ``UserError``.
        """
        with _quiet_orbax():
            return self._restore_newest_valid(abstract_state, signature)

    def _restore_newest_valid(self, abstract_state, signature):
        steps = sorted(self.manager.all_steps(), reverse=True)
        failures = []
        for step in steps:
            try:
                meta = self.read_meta(step)
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
                failures.append(self._set_aside(step, e))
                continue
            saved = meta.get("signature")
            if signature is not None and isinstance(saved, dict):
                differ = [p for p in _PARTS if saved.get(p) != signature.get(p)]
                if differ:
                    what = " and ".join(dict.fromkeys(_PARTS[p] for p in differ))
                    raise UserError(
                        f"{self.directory} holds a checkpoint (step {step}) of a different "
                        f"{what}: pass a new run_dir, or rerun with the config it was "
                        f"trained with (config.yaml beside it)"
                    )
            try:
                state, meta = self.restore(abstract_state, step)
            except Exception as e:  # noqa: BLE001
                if not isinstance(saved, dict) and _looks_like_layout_mismatch(e):
                    raise UserError(
                        f"{self.directory} holds a checkpoint (step {step}) whose arrays do "
                        f"not match this model and optimizer ({type(e).__name__}): pass a new "
                        f"run_dir, or rerun with the config it was trained with"
                    ) from e
                failures.append(self._set_aside(step, e))
                continue
            return state, meta, step
        if failures:
            raise UserError(
                f"no checkpoint in {self.directory} could be restored (steps "
                f"{', '.join(map(str, steps))} moved to checkpoints_corrupt/): pass a new "
                f"run_dir to start afresh"
            )
        return None

    def _set_aside(self, step: int, error: Exception) -> int:
        """Move an unreadable checkpoint out of orbax's sight (kept for inspection)."""
        src = self.directory / str(step)
        dest = self.directory.parent / "checkpoints_corrupt" / f"{step}-{int(time.time())}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.exists():
            src.rename(dest)
        self.manager.reload()
        warn(
            f"checkpoint step {step} in {self.directory} is unreadable "
            f"({type(error).__name__}: {' '.join(str(error).split())[:160]}); moved to "
            f"{dest}, falling back to the previous checkpoint"
        )
        return step

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _looks_like_layout_mismatch(error: Exception) -> bool:
    text = str(error).lower()
    return any(w in text for w in ("shape", "structure", "mismatch", "dtype", "tree"))
