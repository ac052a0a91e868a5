"""Offline text-to-speech with espeak-ng (the library shipped in the ``espeakng-loader`` wheel).

We call ``libespeak-ng.so`` through ctypes in synchronous mode: it renders 22,050 Hz int16
audio into a callback; we resample to 16 kHz with ``scipy.signal.resample_poly`` (320/441)
and keep int16 scale, as LibriSpeech's samples. Voices are espeak's English accents
combined with its voice variants (male/female timbres), at several speaking rates and
pitches; optional background noise is colored Gaussian noise at a random SNR.
"""

import ctypes
import functools
import threading

import espeakng_loader
import numpy as np
from scipy.signal import lfilter, resample_poly

ESPEAK_RATE = 22_050
TARGET_RATE = 16_000
ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+f1", "+f2", "+f3", "+f4", "+f5")
RATE_WPM = (150, 210)  # espeak's default is 175 words per minute
PITCH = (30, 70)  # espeak's 0-100 scale, default 50
MAX_LEAD_SAMPLES = 4_000  # up to 0.25 s of leading silence

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class Espeak:
    """The process-wide espeak-ng engine (the C library keeps global state)."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"espeak-ng failed to initialize (returned {rate})")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # referenced: must outlive the C side
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples, _events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0: continue synthesis

    def synthesize(self, text: str, voice: str, rate_wpm: int, pitch: int) -> np.ndarray:
        """int16 samples at 22,050 Hz of ``text`` spoken by ``voice`` (e.g. ``en-us+f3``)."""
        data = text.encode()
        with self._lock:
            self._chunks = []
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
            self._lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            err = self._lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if err != 0 or self._lib.espeak_Synchronize() != 0:
                raise RuntimeError(f"espeak-ng failed on {text!r} (error {err})")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


@functools.cache
def engine() -> Espeak:
    return Espeak()


def to_16k(samples: np.ndarray) -> np.ndarray:
    """Resamples 22,050 Hz audio to 16 kHz exactly (320/441; float64, same scale)."""
    return resample_poly(samples.astype(np.float64), 320, 441)


def add_noise(audio: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """``audio`` plus low-pass-colored Gaussian noise at ``snr_db`` (float64)."""
    pole = rng.uniform(0.0, 0.95)  # 0: white; near 1: rumbling brown-ish noise
    noise = lfilter([1.0], [1.0, -pole], rng.standard_normal(audio.shape))
    signal_power = np.mean(audio**2) + 1e-9
    noise *= np.sqrt(signal_power / 10 ** (snr_db / 10) / (np.mean(noise**2) + 1e-12))
    return audio + noise


def speak(
    text: str, rng: np.random.Generator, *, noise_prob: float = 0.0, snr_db=(10.0, 30.0)
) -> tuple[np.ndarray, dict]:
    """``text`` spoken by a random voice, rate and pitch after up to 0.25 s of silence:
    int16 samples at 16 kHz and the settings used."""
    settings = {
        "voice": ACCENTS[rng.integers(len(ACCENTS))] + VARIANTS[rng.integers(len(VARIANTS))],
        "rate_wpm": int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
        "pitch": int(rng.integers(PITCH[0], PITCH[1] + 1)),
        "snr_db": None,
    }
    audio = to_16k(
        engine().synthesize(text, settings["voice"], settings["rate_wpm"], settings["pitch"])
    )
    # espeak starts speaking at once; real recordings begin with some silence.
    audio = np.concatenate([np.zeros(int(rng.integers(0, MAX_LEAD_SAMPLES + 1))), audio])
    if rng.uniform() < noise_prob:
        settings["snr_db"] = float(rng.uniform(*snr_db))
        audio = add_noise(audio, rng, settings["snr_db"])
    return np.clip(np.round(audio), -32768, 32767).astype(np.int16), settings
