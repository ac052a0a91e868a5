"""Orbax checkpoints of the whole training state, with automatic resume from the run dir.

What is saved: parameters, optimizer state, model state, step, RNG key and (implicitly,
through ``step``) the position of the deterministic data iterator, plus a small JSON of
run metadata. Restoring uses the abstract train state (shapes, dtypes and shardings), so
optimizer NamedTuples and mesh shardings come back exactly as they were.
"""

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Thin wrapper over :class:`orbax.checkpoint.CheckpointManager` for one run directory."""

    def __init__(self, directory: Path, *, every: int, keep: int):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=max(every, 1), enable_async_checkpointing=True
        )
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict, *, force: bool = False) -> bool:
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=force,
        )

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
        return out.state, out.meta

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
