"""launch/checkpointing.py in-process: the checksum sees every bit, a corrupt newest
checkpoint is set aside with one warning and the previous one restored, a checkpoint of
another model or optimizer is refused with one line.

(The same behaviours through the trainer, in a subprocess-free but compiled run, are the
slower ``test_kill_resume.py::test_corrupt_newest_checkpoint_falls_back_with_one_warning``.)
"""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_checkpoint_keep import abstract, assert_state_is, saved_steps, state_at

from launch.checkpointing import Checkpointer, checksum, state_signature
from launch.errors import UserError


def flips(x: np.ndarray):
    """Every copy of ``x`` with exactly one bit flipped."""
    raw = x.view(np.uint8).reshape(-1)
    for byte in range(raw.size):
        for bit in range(8):
            y = raw.copy()
            y[byte] ^= np.uint8(1 << bit)
            yield y.view(x.dtype).reshape(x.shape)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8, jnp.bfloat16, np.bool_])
def test_checksum_sees_every_single_bit_flip(dtype):
    """A flipped bit anywhere in any leaf changes the checksum (the state's bits are summed
    with weights that are odd, hence invertible modulo 2^32: no bit can cancel)."""
    rng = np.random.default_rng(0)
    if dtype == np.bool_:
        x = rng.integers(0, 2, 7).astype(np.bool_)
    else:
        x = rng.integers(0, 100, 7).astype(dtype)
    other = np.arange(5, dtype=np.float32)
    base = int(checksum({"a": other, "x": x}))
    seen = 0
    for y in flips(x):
        if dtype == np.bool_ and y.view(np.uint8).max() > 1:
            continue  # not a boolean any more
        assert int(checksum({"a": other, "x": y})) != base
        seen += 1
    assert seen >= 7


def test_checksum_sees_moved_entries_and_leaves():
    a = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    b = np.array([5.0, 6.0, 7.0, 8.0], np.float32)
    base = int(checksum([a, b]))
    assert int(checksum([b, a])) != base  # leaves swapped
    assert int(checksum([a[[1, 0, 2, 3]], b])) != base  # entries swapped in a leaf
    assert int(checksum([a, b])) == base  # and it is a function of the bits only
    key = jax.random.PRNGKey(3)
    assert int(checksum([key])) != int(checksum([jax.random.PRNGKey(4)]))


def test_state_signature_is_the_layout_of_params_model_and_optimizer_state():
    sig = state_signature(abstract())
    assert set(sig) == {"params", "model_state", "opt_state"}
    assert state_signature(state_at(7)) == sig  # values and step do not matter
    wider = jax.eval_shape(lambda: state_at(0)._replace(params={"w": jnp.zeros((4, 4))}))
    assert state_signature(wider)["params"] != sig["params"]
    assert state_signature(wider)["opt_state"] == sig["opt_state"]
    half = jax.eval_shape(
        lambda: state_at(0)._replace(
            opt_state=jax.tree.map(lambda x: x.astype(jnp.float16), state_at(0).opt_state)
        )
    )
    assert state_signature(half)["opt_state"] != sig["opt_state"]


def save_steps(directory: Path, steps, signature=None) -> None:
    ckpt = Checkpointer(directory, every=1, keep=len(steps))
    for step in steps:
        meta = {"step": step} | ({"signature": signature} if signature else {})
        assert ckpt.save(step, state_at(step), meta, force=True)
    ckpt.close()


def corrupt(step_dir: Path, how: str) -> None:
    """``truncate``/``garbage``: every file of the checkpoint; ``state_*``: only the arrays'
    files; ``state_flip``: one bit of the largest; ``meta_checksum``: the recorded checksum
    (the arrays are intact, so only the comparison can notice)."""
    if how == "meta_checksum":
        meta = step_dir / "meta" / "metadata"  # orbax's JsonSave file
        data = json.loads(meta.read_text())
        data["checksum"] = (data["checksum"] + 1) % 2**32
        meta.write_text(json.dumps(data))
        return
    root = step_dir / "state" if how.startswith("state_") else step_dir
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert files
    if how == "state_flip":
        largest = max(files, key=lambda p: p.stat().st_size)
        data = bytearray(largest.read_bytes())
        data[len(data) // 2] ^= 0x01
        largest.write_bytes(bytes(data))
        return
    for p in files:
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 3] if how.endswith("truncate") else os.urandom(16))


def test_a_wrong_checksum_is_refused(tmp_path):
    save_steps(tmp_path / "ck", [1, 2])
    corrupt(tmp_path / "ck" / "2", "meta_checksum")
    ckpt = Checkpointer(tmp_path / "ck", every=1, keep=2)
    with pytest.raises(ValueError, match="step 2: the restored arrays do not match"):
        ckpt.restore(abstract(), 2)
    state, meta = ckpt.restore(abstract(), 1)  # the intact one passes its check
    assert meta == {"step": 1}
    assert_state_is(state, 1)
    ckpt.close()


@pytest.mark.parametrize(
    "how", ["meta_checksum", "state_flip", "state_truncate", "state_garbage", "garbage"]
)
def test_corrupt_newest_falls_back_to_the_previous_with_one_warning(how, tmp_path, capfd):
    save_steps(tmp_path / "ck", [1, 2, 3])
    corrupt(tmp_path / "ck" / "3", how)
    capfd.readouterr()
    ckpt = Checkpointer(tmp_path / "ck", every=1, keep=3)
    state, meta, step = ckpt.restore_newest_valid(abstract())
    err = capfd.readouterr().err
    assert step == 2 and meta == {"step": 2}
    assert_state_is(state, 2)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, err
    assert "checkpoint step 3" in warnings[0] and "falling back" in warnings[0]
    # Set aside for inspection, out of orbax's sight: the next save does not collide.
    assert ckpt.latest_step() == 2 and saved_steps(tmp_path / "ck") == [1, 2]
    (aside,) = (tmp_path / "checkpoints_corrupt").iterdir()
    assert aside.name.startswith("3-")
    assert ckpt.save(3, state_at(3), {"step": 3}, force=True)
    ckpt.close()
    assert saved_steps(tmp_path / "ck") == [1, 2, 3]


def test_every_checkpoint_corrupt_is_one_error_and_an_empty_dir_is_none(tmp_path, capfd):
    assert (
        Checkpointer(tmp_path / "empty", every=1, keep=2).restore_newest_valid(abstract()) is None
    )
    save_steps(tmp_path / "ck", [1, 2])
    for step in (1, 2):
        corrupt(tmp_path / "ck" / str(step), "garbage")
    ckpt = Checkpointer(tmp_path / "ck", every=1, keep=2)
    with pytest.raises(UserError, match=r"no checkpoint in .* could be restored \(steps 2, 1"):
        ckpt.restore_newest_valid(abstract())
    warnings = [x for x in capfd.readouterr().err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 2  # one per checkpoint set aside
    assert saved_steps(tmp_path / "ck") == []


@pytest.mark.parametrize(
    ("part", "words"),
    [("opt_state", "different optimizer or optimizer settings"), ("params", "different model")],
)
def test_a_checkpoint_of_another_run_is_refused_and_left_alone(part, words, tmp_path):
    signature = state_signature(abstract())
    save_steps(tmp_path / "ck", [1, 2], signature=signature)
    ckpt = Checkpointer(tmp_path / "ck", every=1, keep=2)
    assert all(len(v) == 16 and int(v, 16) >= 0 for v in signature.values())  # 16 hex digits
    state, meta, step = ckpt.restore_newest_valid(abstract(), signature)  # the same run
    assert step == 2 and meta["signature"] == signature
    assert_state_is(state, 2)
    _, _, step = ckpt.restore_newest_valid(abstract())  # no signature to compare: restored
    assert step == 2
    other = signature | {part: "0" * 16}
    with pytest.raises(UserError, match=rf"\(step 2\) of a {words} \(.*\): pass a new run_dir"):
        ckpt.restore_newest_valid(abstract(), other)
    ckpt.close()
    assert saved_steps(tmp_path / "ck") == [1, 2]  # nothing moved
    assert not (tmp_path / "checkpoints_corrupt").exists()


def test_an_unsigned_checkpoint_of_another_layout_is_refused(tmp_path):
    """Checkpoints written before signatures existed: a restore that fails on shapes is a
    checkpoint of another model, not a corrupt one (nothing is set aside)."""
    save_steps(tmp_path / "ck", [1])
    wider = jax.eval_shape(
        lambda: state_at(0)._replace(params={"w": jnp.zeros((5, 3)), "b": jnp.zeros((3,))})
    )
    ckpt = Checkpointer(tmp_path / "ck", every=1, keep=1)
    with pytest.raises(UserError, match=r"\(step 1\) whose arrays do not match"):
        ckpt.restore_newest_valid(wider)
    ckpt.close()
    assert saved_steps(tmp_path / "ck") == [1]


def reference_checksum(tree, version: int) -> int:
    """The checksum's definition, in plain Python integers: leaf ``i`` (in tree order) as
    unsigned words ``u_j`` (1-, 2- or 4-byte ones; a bool as 0/1) contributes
    ``sum_j u_j (j * 2654435761 * s + 2 i + 1) mod 2^32``, ``s = 2`` (version 2) or
    ``s = 1`` (version 1, still read). It is stored in every checkpoint, so it is a file
    format: a change of it would make every existing checkpoint look corrupt."""
    total = 0
    for i, leaf in enumerate(jax.tree.leaves(tree)):
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        x = np.asarray(leaf)
        if x.dtype == np.bool_:
            words = x.astype(np.uint32)
        else:
            words = x.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[x.dtype.itemsize])
        for j, u in enumerate(words.ravel().tolist()):
            total += int(u) * ((j * 2654435761 * (2 if version >= 2 else 1) + 2 * i + 1) % 2**32)
    return total % 2**32


def test_checksum_is_its_documented_sum():
    rng = np.random.default_rng(1)
    tree = {
        "a": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal(5).astype(jnp.bfloat16),
        "c": rng.integers(-(2**31), 2**31 - 1, 6).astype(np.int32),
        "d": rng.integers(0, 256, 7).astype(np.uint8),
        "e": rng.integers(0, 2, 4).astype(np.bool_),
        "f": jax.random.key(11),
        "g": jax.random.PRNGKey(12),
    }
    for version in (1, 2):
        assert int(checksum(tree, version=version)) == reference_checksum(tree, version)
    assert int(checksum(tree)) == reference_checksum(tree, 2)  # the default: version 2


def test_checkpoints_with_a_version_1_checksum_or_none_still_restore(tmp_path):
    """Checkpoints written before the checksum's version 2 carry no ``checksum_version``
    and a version-1 sum (older ones no checksum at all): they restore (a run in progress
    resumes), and a wrong version-1 sum is still caught."""
    save_steps(tmp_path / "ck", [1, 2, 3])
    for step in (1, 2, 3):
        meta = tmp_path / "ck" / str(step) / "meta" / "metadata"
        data = json.loads(meta.read_text())
        assert data.pop("checksum_version") == 2
        assert data["checksum"] == reference_checksum(state_at(step), 2)
        data["checksum"] = reference_checksum(state_at(step), 1) + (step == 2)
        if step == 3:
            del data["checksum"]
        meta.write_text(json.dumps(data))
    assert reference_checksum(state_at(1), 1) != reference_checksum(state_at(1), 2)
    ckpt = Checkpointer(tmp_path / "ck", every=1, keep=3)
    for step in (1, 3):
        state, meta = ckpt.restore(abstract(), step)
        assert meta == {"step": step}
        assert_state_is(state, step)
    with pytest.raises(ValueError, match="do not match their checksum"):
        ckpt.restore(abstract(), 2)
    ckpt.close()
