"""Noise for noise-condition tasks: generated noise (white, pink, brown, mains hum, babble of other utterances),
stretches of real recordings, and mixing with speech at a signal-to-noise ratio.

Samples are mono float32. The spectra of the generated noises: white flat, pink 1/f (-3 dB per octave), brown
1/f^2 (-6 dB per octave), both flat below F_MIN_HZ so that their power is not all below hearing; hum is the
50 Hz mains and its harmonics up to HUM_TOP_HZ (amplitude 1/k, each harmonic's level and phase drawn), with
the frequency drifting a little per utterance and white noise HUM_FLOOR_DB under it. Babble is BABBLE_TALKERS
talkers, each a stream of other utterances of a speech pool (none with the text of the utterance it is mixed
with), each talker normalised to the same power.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarecipe.data.audio import read_audio_file
from metarecipe.errors import InputError
from metarecipe.features.waveform import audio_files, mix_at_snr, power, stretch

F_MIN_HZ = 20.0  # coloured noise is flat below this
COLOUR_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectral density ~ 1 / f^exponent
MAINS_HZ = 50.0
HUM_TOP_HZ = 2000.0  # highest harmonic of the hum
HUM_FLOOR_DB = -30.0  # broadband noise under the hum, relative to it
BABBLE_TALKERS = (4, 8)  # drawn per utterance, both ends included
PEAK = 0.99  # a mix louder than this is scaled down (speech and noise alike: the SNR stays)


@dataclass(frozen=True)
class Speech:
    """One utterance of a speech pool, its samples at the output rate."""

    utt: str
    spk: str
    text: str
    lang: str | None
    samples: np.ndarray


def coloured_noise(length: int, rate: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power spectral density falls as 1/f^exponent (flat below F_MIN_HZ, no DC)."""
    white = rng.standard_normal(length)
    if exponent == 0:
        return white.astype(np.float32)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(length, 1.0 / rate)
    spectrum *= np.maximum(freqs, F_MIN_HZ) ** (-exponent / 2)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n=length).astype(np.float32)


def hum(length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: MAINS_HZ (drifting by up to 0.2%) and its harmonics, plus a little white noise."""
    base = MAINS_HZ * (1 + rng.uniform(-0.002, 0.002))
    harmonics = np.arange(1, int(min(HUM_TOP_HZ, rate / 2 - 1) / base) + 1)
    amplitudes = rng.uniform(0.5, 1.5, harmonics.size) / harmonics
    phases = rng.uniform(0, 2 * math.pi, harmonics.size)
    step = np.exp(2j * math.pi * base * np.arange(length) / rate)
    tone = np.zeros(length, dtype=np.complex128)
    for amplitude, phase in zip(amplitudes[::-1], phases[::-1], strict=True):  # Horner: sum of c_k step^k
        tone = (tone + amplitude * np.exp(1j * phase)) * step
    tone = tone.imag
    floor = rng.standard_normal(length) * math.sqrt(power(tone) * 10 ** (HUM_FLOOR_DB / 10))
    return (tone + floor).astype(np.float32)


def babble(length: int, pool: Sequence[Speech], text: str, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """The sum of 4 to 8 talkers, each a stream of utterances of the pool whose text is not `text` (so never the
    utterance itself), from a random place, at equal power; and the ids of the utterances used. InputError when
    the pool holds no other text."""
    others = [s for s in pool if s.text != text]
    if not others:
        raise InputError(f"babble: the speech pool has no utterance with another text than {text!r}")
    order = _shuffled_forever(len(others), rng)  # distinct prompts until all are used
    total, used = np.zeros(length, dtype=np.float32), []
    for _ in range(int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1))):
        pieces = [others[next(order)]]
        start = int(rng.integers(0, pieces[0].samples.size))
        while sum(p.samples.size for p in pieces) - start < length:
            pieces.append(others[next(order)])
        talker = np.concatenate([p.samples for p in pieces])[start:start + length]
        total += talker / np.float32(math.sqrt(max(power(talker), 1e-12)))
        used += [p.utt for p in pieces]
    return total, sorted(set(used))


def _shuffled_forever(count: int, rng: np.random.Generator) -> Iterator[int]:
    """0 .. count - 1 in a random order, again and again."""
    while True:
        yield from (int(i) for i in rng.permutation(count))


class Recordings:
    """Real noise recordings (a directory of audio files, or one file) at the output rate, read once."""

    def __init__(self, path: str | Path, rate: int):
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such noise directory or file")
        files = audio_files(path) if path.is_dir() else [path]
        if not files:
            raise InputError(f"{path}: holds no audio file that soundfile reads")
        self.files = files
        self.samples = [read_audio_file(f, rate) for f in files]
        self.rate = rate

    def segment(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """`length` samples from a random place of a recording (every second as likely), looped where it is
        shorter, and where they come from ("file.wav@12.34s")."""
        sizes = np.array([s.size for s in self.samples], dtype=np.float64)
        index = int(rng.choice(len(sizes), p=sizes / sizes.sum()))
        offset = int(rng.integers(0, self.samples[index].size))
        return stretch(self.samples[index], length, offset), f"{self.files[index]}@{offset / self.rate:.2f}s"


def noise_of(kind: str, speech: Speech, rate: int, rng: np.random.Generator, recordings: dict[str, Recordings],
             pool: Sequence[Speech]) -> tuple[np.ndarray, str]:
    """Noise of a type as long as the utterance, and what it is made of (a description for mixing.tsv)."""
    length = speech.samples.size
    if kind in recordings:
        return recordings[kind].segment(length, rng)
    if kind in COLOUR_EXPONENTS:
        return coloured_noise(length, rate, COLOUR_EXPONENTS[kind], rng), "generated"
    if kind == "hum":
        return hum(length, rate, rng), "generated"
    if kind == "babble":
        noise, used = babble(length, pool, speech.text, rng)
        return noise, "babble:" + ",".join(used)
    raise InputError(f"unknown noise type '{kind}'")


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, float]:
    """(speech + noise at snr_db, the gain both were scaled by to keep the peak under PEAK)."""
    mixed = mix_at_snr(speech, noise, snr_db)
    peak = float(np.abs(mixed).max()) if mixed.size else 0.0
    gain = min(1.0, PEAK / peak) if peak > 0 else 1.0
    return (mixed * np.float32(gain)).astype(np.float32), gain
