"""Waveform perturbations for training-time augmentation: recordings of noise mixed in at a signal-to-noise
ratio, babble (other speech) the same way, and reverberation by a simulated room impulse response.

Samples are mono float32 in [-1, 1]; what is kept in memory is int16 (`to_int16`, `from_int16`: exact for
16-bit audio, which is what soundfile gives for PCM files), half the size of float32.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import soundfile
import soxr

from metarecipe.config import ConfigError
from metarecipe.data.audio import read_audio_file

INT16_SCALE = 32768.0
DECAY_60DB = 3 * math.log(10)  # an amplitude exp(-DECAY_60DB * t / rt60) has fallen by 60 dB at t = rt60


def to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * INT16_SCALE), -32768, 32767).astype(np.int16)


def from_int16(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / np.float32(INT16_SCALE)


def power(samples: np.ndarray) -> float:
    return float(np.mean(np.square(samples, dtype=np.float64))) if len(samples) else 0.0


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise (as long as speech) scaled so that 10 log10(power(speech) / power(scaled noise)) = snr_db;
    silent noise or speech leaves the speech as it is."""
    noise_power, speech_power = power(noise), power(speech)
    if noise_power == 0 or speech_power == 0:
        return speech
    scale = math.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return (speech + np.float32(scale) * noise).astype(np.float32)


def stretch(recording: np.ndarray, length: int, offset: int) -> np.ndarray:
    """`length` samples of a recording from `offset` on, wrapping around to its start (a loop)."""
    return np.take(recording, np.arange(offset, offset + length), mode="wrap")


def room_impulse_response(sample_rate: int, rt60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """A simulated room impulse response: the direct path (1 at t = 0) and a tail of Gaussian noise decaying by
    60 dB in rt60 seconds, scaled so that the direct-to-reverberant energy ratio is drr_db."""
    times = np.arange(1, max(2, int(rt60 * sample_rate))) / sample_rate
    tail = rng.standard_normal(len(times)) * np.exp(-DECAY_60DB * times / rt60)
    tail *= math.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    return np.concatenate([[1.0], tail]).astype(np.float32)


def fft_size(length: int) -> int:
    """The smallest 2^a 3^b 5^c at least `length`: an FFT size as fast as a power of two, and often smaller."""
    best = 1 << max(0, length - 1).bit_length()
    fives = 1
    while fives < best:
        size = fives
        while size < best:
            candidate = size << max(0, math.ceil(math.log2(length / size)))
            best = min(best, candidate)
            size *= 3
        fives *= 5
    return best


def convolve(samples: np.ndarray, response: np.ndarray) -> np.ndarray:
    """The first len(samples) samples of their convolution with response, by FFT (numpy's: torch's plans a new
    transform for every length, 20 times slower here)."""
    size = fft_size(len(samples) + len(response) - 1)
    return np.fft.irfft(np.fft.rfft(samples, size) * np.fft.rfft(response, size), size)[: len(samples)]


def reverberate(samples: np.ndarray, response: np.ndarray) -> np.ndarray:
    """The samples as heard through a room impulse response, at their original power."""
    wet = convolve(samples, response)
    gain = math.sqrt(power(samples) / power(wet)) if power(wet) > 0 else 1.0
    return (wet * gain).astype(np.float32)


def audio_files(directory: Path) -> list[Path]:
    """Files under a directory (recursively, sorted) that soundfile can open as audio; others are passed over."""
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        try:
            soundfile.info(str(path))
        except (soundfile.LibsndfileError, RuntimeError):
            continue
        found.append(path)
    return found


class NoiseBank:
    """Recordings of noise from directories, read once and kept as int16 at their own rate; resampled once per
    feature sample rate asked for (safe to share by threads). `stretch` draws a random stretch of them."""

    def __init__(self, directories: list[str], key: str = "augment.noise_dirs"):
        self.recordings: list[tuple[np.ndarray, int]] = []
        for i, directory in enumerate(map(Path, directories)):
            if not directory.is_dir():
                raise ConfigError(f"{key}[{i}]: {directory}: no such directory")
            files = audio_files(directory)
            if not files:
                raise ConfigError(f"{key}[{i}]: {directory}: holds no audio file that soundfile reads")
            for path in files:
                rate = soundfile.info(str(path)).samplerate
                self.recordings.append((to_int16(read_audio_file(path, rate)), rate))
        self._resampled: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.recordings)

    def at_rate(self, sample_rate: int) -> list[np.ndarray]:
        """The recordings as int16 at sample_rate (resampled on the first call for that rate)."""
        with self._lock:
            if sample_rate not in self._resampled:
                self._resampled[sample_rate] = [
                    samples if rate == sample_rate else
                    to_int16(soxr.resample(from_int16(samples), rate, sample_rate, quality="HQ"))
                    for samples, rate in self.recordings]
            return self._resampled[sample_rate]

    def stretch(self, sample_rate: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """`length` float32 samples of noise from a random place of the recordings (every second of them as
        likely), looped where a recording is shorter."""
        recordings = self.at_rate(sample_rate)
        sizes = np.array([len(r) for r in recordings], dtype=np.float64)
        recording = recordings[int(rng.choice(len(recordings), p=sizes / sizes.sum()))]
        return from_int16(stretch(recording, length, int(rng.integers(0, max(1, len(recording))))))
