"""The authors' implementations, measured beside ours by ``optimizer_step.py`` (never used by
the library): ``distributed_shampoo`` from the pinned ``precondition-opt`` 0.3.0, and the
tearfree Shampoo and Sketchy of a source checkout of google-research/precondition given by
``--tearfree-src`` (tearfree is not in any release on the package index)."""

import contextlib
import io
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import optax

TEARFREE_SKETCHY = "ref tearfree sketchy r128"


def distributed_shampoo_rows(
    update_freq: int,
) -> dict[str, Callable[[], optax.GradientTransformation]]:
    """``distributed_shampoo`` (eigh roots every ``update_freq`` steps) and its
    frequent-directions mode, rank 128."""
    try:
        # precondition-opt 0.3.0 predates the removal of jax.tree_map & co.
        for old, new in [
            ("tree_map", jax.tree.map),
            ("tree_flatten", jax.tree.flatten),
            ("tree_unflatten", jax.tree.unflatten),
            ("tree_leaves", jax.tree.leaves),
            ("tree_structure", jax.tree.structure),
        ]:
            setattr(jax, old, new)
        from precondition import distributed_shampoo as ds
    except ImportError as e:  # e.g. chex missing: say which import failed, not "not installed"
        print(f"precondition-opt cannot be imported ({e}): reference rows skipped", file=sys.stderr)
        return {}

    def make(**kw):
        return lambda: ds.distributed_shampoo(
            1e-3,
            block_size=1024,
            beta1=0.9,
            beta2=0.999,
            graft_type=ds.GraftingType.RMSPROP_NORMALIZED,
            start_preconditioning_step=1,
            preconditioning_compute_steps=update_freq,
            eigh=True,
            **kw,
        )

    return {
        "ref distributed_shampoo": make(statistics_compute_steps=1),
        "ref distributed_shampoo FD r128": make(
            statistics_compute_steps=update_freq,
            frequent_directions=True,
            compression_rank=128,
            reuse_preconditioner=True,  # the FD mode asserts without it
        ),
    }


def check_tearfree_src(src: str) -> Path:
    """``src/precondition/tearfree`` or a one-line ``ValueError`` saying what to pass."""
    folder = Path(src) / "precondition" / "tearfree"
    if not (folder / "optimizer.py").is_file():
        raise ValueError(
            f"--tearfree-src {src}: no precondition/tearfree/optimizer.py under it; pass the "
            "root of a source checkout of google-research/precondition"
        )
    return folder


def _quiet(tx) -> optax.GradientTransformation:
    """``tx`` with stdout silenced while it is traced: tearfree Shampoo prints its einsum
    formulas at trace time, which would break the printed tables."""

    def update(updates, state, params=None):
        with contextlib.redirect_stdout(io.StringIO()):
            return tx.update(updates, state, params)

    return optax.GradientTransformation(tx.init, update)


def tearfree_rows(
    src: str, update_freq: int
) -> dict[str, Callable[[], optax.GradientTransformation]]:
    """Tearfree Shampoo (block 1024, statistics every step, roots every ``update_freq``) and
    Sketchy (rank 128, sketch every ``update_freq`` steps), RMSProp graft (b2 0.999, eps
    1e-8, no bias correction), Nesterov momentum 0.9, learning rate 1e-3; other options at
    their defaults (tearfree merges dims up to 1024 and does not block Sketchy's factors)."""
    folder = check_tearfree_src(src)
    import precondition  # the pinned precondition-opt: tearfree is grafted onto its package

    if str(folder.parent) not in precondition.__path__:
        precondition.__path__.append(str(folder.parent))
    from precondition.tearfree import grafting, momentum, second_order
    from precondition.tearfree import optimizer as tf
    from precondition.tearfree import shampoo as tf_shampoo
    from precondition.tearfree import sketchy as tf_sketchy

    def make(**second):
        options = tf.TearfreeOptions(
            grafting_options=grafting.Options(
                grafting_type=grafting.GraftingType.RMSPROP,
                second_moment_decay=0.999,
                epsilon=1e-8,
            ),
            second_order_options=second_order.Options(**second),
            momentum_options=momentum.Options(momentum_decay=0.9, nesterov=True),
        )
        return lambda: _quiet(tf.tearfree(1e-3, options))

    kinds = second_order.SecondOrderType
    return {
        "ref tearfree shampoo": make(
            second_order_type=kinds.SHAMPOO,
            shampoo_options=tf_shampoo.Options(
                block_size=1024, update_statistics_freq=1, update_preconditioners_freq=update_freq
            ),
        ),
        TEARFREE_SKETCHY: make(
            second_order_type=kinds.SKETCHY,
            sketchy_options=tf_sketchy.Options(rank=128, update_freq=update_freq),
        ),
    }
