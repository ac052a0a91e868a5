"""The Conformer: parameter counts of every preset, front end, SpecAugment, padding handling."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workloads.librispeech import frontend
from workloads.librispeech.model import Conformer, resolve_size

# (parameters, parameter tensors, BatchNorm statistics) at vocabulary 1024. algoperf matches
# AlgoPerf's 4-layer Conformer (32,321,792 in 154 tensors, 4,096 batch statistics); paper is
# the same model at init2winit's 16 layers.
EXPECTED = {
    "paper": (104_883_200, 586, 16_384),
    "algoperf": (32_321_792, 154, 4_096),
    "tiny": (816_392, 118, 576),
}


def _abstract_variables(model, samples=16_000):
    audio = jnp.zeros((2, samples), jnp.int16)
    lengths = jnp.array([samples, samples // 2])
    return jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0)}, audio, lengths, train=False)
    )


@pytest.mark.parametrize("size", sorted(EXPECTED))
def test_parameter_counts(size):
    model = Conformer(vocab_size=1024, **resolve_size(size))
    variables = _abstract_variables(model)
    params = jax.tree.leaves(variables["params"])
    stats = jax.tree.leaves(variables["batch_stats"])
    got = (sum(int(np.prod(p.shape)) for p in params), len(params))
    got += (sum(int(np.prod(s.shape)) for s in stats),)
    assert got == EXPECTED[size]


def test_reference_shapes_for_20_seconds_of_audio():
    # AlgoPerf: 320,000 samples -> 1,998 frames of 80 mel bins -> 500 encoder frames.
    audio = jax.ShapeDtypeStruct((2, 320_000), jnp.int16)
    lengths = jax.ShapeDtypeStruct((2,), jnp.int32)
    features, paddings = jax.eval_shape(frontend.log_mel, audio, lengths)
    assert features.shape == (2, 1998, 80) and paddings.shape == (2, 1998)
    model = Conformer(vocab_size=1024, **resolve_size("algoperf"))
    variables = _abstract_variables(model)
    logits, out_paddings = jax.eval_shape(
        functools.partial(model.apply, train=False), variables, audio, lengths
    )
    assert logits.shape == (2, 500, 1024) and out_paddings.shape == (2, 500)


def test_log_mel_of_a_tone_peaks_in_its_mel_bin_and_masks_padding():
    t = np.arange(8_000) / frontend.SAMPLE_RATE
    tone = (8_000 * np.sin(2 * np.pi * 1_000 * t)).astype(np.int16)
    audio = np.zeros((1, 12_000), np.int16)
    audio[0, :8_000] = tone
    features, paddings = jax.jit(frontend.log_mel)(audio, np.array([8_000]))
    features, paddings = np.asarray(features), np.asarray(paddings)
    valid = int((paddings[0] == 0).sum())
    assert valid == 50  # frames starting before sample 8,000 (one every 160 samples)
    assert np.all(features[0, valid:] == 0)
    peak = np.argmax(features[0, 10])
    centers = np.argmax(frontend.mel_matrix(), axis=0) * frontend.SAMPLE_RATE / 512
    assert abs(centers[peak] - 1_000) < 100


def test_spec_augment_masks_whole_bins_and_frames_only():
    features = jnp.ones((4, 200, 80))
    paddings = jnp.zeros((4, 200)).at[:, 150:].set(1.0)
    out = np.asarray(jax.jit(frontend.spec_augment)(jax.random.key(3), features, paddings))
    assert set(np.unique(out)) <= {0.0, 1.0} and 0 < out.mean() < 1
    for row in out:
        zero_bins = np.all(row == 0, axis=0)
        zero_frames = np.all(row == 0, axis=1)
        # Every zero lies in a fully masked bin or a fully masked frame.
        assert np.all((row == 1) | zero_bins[None, :] | zero_frames[:, None])
        assert zero_bins.sum() <= 2 * 26
        assert zero_frames[:150].sum() <= 10 * 7  # 10 masks of at most 5% of 150 frames


def test_logits_of_valid_frames_do_not_depend_on_padding():
    # The same utterance alone in a short batch and next to a longer one (more padding):
    # convolutions, attention and BatchNorm must all ignore padding frames.
    # One small block: every module type once, quick to compile.
    model = Conformer(
        vocab_size=32, **resolve_size("tiny", num_layers=1, encoder_dim=32, num_heads=2)
    )
    rng = np.random.default_rng(0)
    speech = rng.integers(-3000, 3000, 9_000).astype(np.int16)
    short = np.zeros((1, 10_000), np.int16)
    short[0, :9_000] = speech
    long = np.zeros((2, 16_000), np.int16)
    long[0, :9_000] = speech
    long[1] = rng.integers(-3000, 3000, 16_000)
    variables = jax.jit(functools.partial(model.init, train=False))(
        {"params": jax.random.key(0)}, short, np.array([9_000])
    )
    forward = jax.jit(functools.partial(model.apply, train=False))
    a, pad_a = forward(variables, short, np.array([9_000]))
    b, pad_b = forward(variables, long, np.array([9_000, 16_000]))
    n = int((np.asarray(pad_a[0]) == 0).sum())
    assert n == int((np.asarray(pad_b[0]) == 0).sum()) > 0
    np.testing.assert_allclose(np.asarray(a[0, :n]), np.asarray(b[0, :n]), atol=2e-4)
