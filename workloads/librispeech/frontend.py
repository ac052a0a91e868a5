"""Log-mel front end and SpecAugment, in JAX (run inside the model, on the accelerator).

The front end follows the AlgoPerf/lingvo recipe: 16 kHz waveforms at int16 scale are
multiplied by 2^-15, cut into 25 ms frames (400 samples plus one for pre-emphasis) every
10 ms, pre-emphasized (0.97), Hann-windowed, zero-padded to a 512-point FFT, turned into
power spectra, projected onto 80 HTK-mel triangles between 125 and 7600 Hz, and logged
with a floor of 1e-5. Each mel bin is then normalized by a per-bin mean and standard
deviation. AlgoPerf hard-codes LibriSpeech's; here they are estimated from the training
audio of whichever data set is used (:func:`feature_stats`), so that the synthesized mini
data is normalized as well as real LibriSpeech.

Our pre-emphasis uses the frame's extra sample (``y[n] = x[n+1] - 0.97 x[n]``), so a
frame's 400 output samples see 401 inputs; a frame is valid when it starts inside the
utterance (the padding convention of the reference).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16_000
FRAME_LENGTH = 400  # 25 ms
FRAME_STEP = 160  # 10 ms
FFT_LENGTH = 512
NUM_MEL_BINS = 80
LOWER_EDGE_HZ = 125.0
UPPER_EDGE_HZ = 7600.0
PREEMPHASIS = 0.97
LOG_FLOOR = 1e-5
INPUT_SCALE = 2.0**-15  # int16-scale samples -> [-1, 1)


def num_frames(num_samples: int) -> int:
    """Frames of a waveform of ``num_samples`` samples (static)."""
    return max(0, (num_samples - FRAME_LENGTH - 1) // FRAME_STEP + 1)


def _hz_to_mel(hz):
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


@functools.cache
def mel_matrix() -> np.ndarray:
    """``(FFT_LENGTH // 2 + 1, NUM_MEL_BINS)`` HTK-mel triangles (DC bin excluded)."""
    bins = FFT_LENGTH // 2 + 1
    mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, bins))[:, None]
    edges = np.linspace(_hz_to_mel(LOWER_EDGE_HZ), _hz_to_mel(UPPER_EDGE_HZ), NUM_MEL_BINS + 2)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (mel - left) / (center - left)
    falling = (right - mel) / (right - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0] = 0.0
    return weights.astype(np.float32)


@functools.cache
def _frame_constants() -> tuple[np.ndarray, np.ndarray]:
    # Periodic Hann window of 400 samples.
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME_LENGTH) / FRAME_LENGTH)
    return window.astype(np.float32), np.arange(FRAME_LENGTH + 1)


def log_mel(audio: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Unnormalized log-mel features of int16-scale waveforms.

    Args:
        audio: ``(batch, samples)`` waveform at int16 scale (any int or float dtype).
        lengths: ``(batch,)`` valid samples per row; samples beyond are ignored.

    Returns:
        ``(batch, frames, 80)`` float32 log-mel features (padding frames zeroed) and
        ``(batch, frames)`` paddings (1.0 on padding frames).
    """
    batch, samples = audio.shape
    frames = num_frames(samples)
    window, offsets = _frame_constants()
    valid = jnp.arange(samples)[None, :] < lengths[:, None]
    x = jnp.where(valid, audio.astype(jnp.float32) * INPUT_SCALE, 0.0)
    index = np.arange(frames)[:, None] * FRAME_STEP + offsets[None, :]  # (frames, 401)
    framed = x[:, index]
    emphasized = framed[..., 1:] - PREEMPHASIS * framed[..., :-1]
    power = jnp.square(jnp.abs(jnp.fft.rfft(emphasized * window, n=FFT_LENGTH, axis=-1)))
    mel = jnp.einsum("btf,fm->btm", power, mel_matrix())
    features = jnp.log(jnp.maximum(mel, LOG_FLOOR))
    paddings = (jnp.arange(frames)[None, :] * FRAME_STEP >= lengths[:, None]).astype(jnp.float32)
    return features * (1.0 - paddings)[..., None], paddings


def feature_stats(batches) -> tuple[list[float], list[float]]:
    """Per-bin mean and standard deviation of log-mel features over valid frames.

    ``batches`` yields ``(audio, lengths)`` NumPy pairs. Runs eagerly even when called
    while a jitted function is being traced (the stats become constants of the model).
    """
    total = np.zeros(NUM_MEL_BINS)
    total_sq = np.zeros(NUM_MEL_BINS)
    count = 0.0
    fn = jax.jit(log_mel)
    with jax.ensure_compile_time_eval():
        for audio, lengths in batches:
            features, paddings = fn(np.asarray(audio), np.asarray(lengths, np.int32))
            features = np.asarray(features, np.float64)
            valid = 1.0 - np.asarray(paddings, np.float64)
            total += np.einsum("btm,bt->m", features, valid)
            total_sq += np.einsum("btm,bt->m", features**2, valid)
            count += valid.sum()
    if count == 0:
        raise ValueError("feature_stats: no valid frames in the given audio")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-6))
    return [float(v) for v in mean], [float(v) for v in std]


def _span_masks(rng, widths_max, ranges, count: int, size: int) -> jax.Array:
    """``(batch, size)`` 1.0 where any of ``count`` random spans per row covers a position.

    A span's width is uniform in ``[0, widths_max)`` (floor); its start is uniform among
    positions where it fits inside ``[0, ranges)``.
    """
    batch = ranges.shape[0]
    k_width, k_start = jax.random.split(rng)
    width = jnp.floor(jax.random.uniform(k_width, (batch, count)) * widths_max[:, None])
    room = jnp.maximum(ranges[:, None] - width + 1, 1)
    start = jnp.floor(jax.random.uniform(k_start, (batch, count)) * room)
    pos = jnp.arange(size)[None, None, :]
    covered = (pos >= start[..., None]) & (pos < (start + width)[..., None])
    return jnp.any(covered, axis=1).astype(jnp.float32)


def spec_augment(
    rng: jax.Array,
    features: jax.Array,
    paddings: jax.Array,
    *,
    freq_mask_count: int = 2,
    freq_mask_max_bins: int = 27,
    time_mask_count: int = 10,
    time_mask_max_ratio: float = 0.05,
) -> jax.Array:
    """SpecAugment (Park et al. 2019) as in the reference: frequency and time masks set to 0.

    Time masks are "dynamic": a mask is at most ``time_mask_max_ratio`` of the
    utterance's valid frames (at least one frame) wide.
    """
    batch, frames, bins = features.shape
    k_freq, k_time = jax.random.split(rng)
    keep = jnp.ones((batch, frames, bins), features.dtype)
    if freq_mask_count and freq_mask_max_bins:
        widths = jnp.full((batch,), float(freq_mask_max_bins))
        ranges = jnp.full((batch,), float(bins))
        freq = _span_masks(k_freq, widths, ranges, freq_mask_count, bins)
        keep = keep * (1.0 - freq)[:, None, :]
    if time_mask_count and time_mask_max_ratio > 0:
        lengths = jnp.sum(1.0 - paddings, axis=1)
        widths = jnp.maximum(jnp.floor(time_mask_max_ratio * lengths), 1.0)
        time = _span_masks(k_time, widths, lengths, time_mask_count, frames)
        keep = keep * (1.0 - time)[:, :, None]
    return features * keep
