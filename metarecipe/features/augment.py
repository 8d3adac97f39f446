"""Training-time augmentation of an utterance's features, drawn afresh each time it is in a batch.

On the waveform: speed perturbation as Kaldi does it (resampling: tempo and pitch change together, one factor of
`speed_factors` drawn per utterance), reverberation by a simulated room impulse response, babble (other
utterances of the batch summed) and noise recordings (`noise_dirs`: any audio soundfile reads) mixed in at a
random signal-to-noise ratio. On the features: SpecAugment (Park et al. 2019), bands of mel bins and spans of
frames masked, their widths relative to the number of bins and of frames so that 40 and 80 bins both work.

An utterance drawn for no waveform perturbation keeps its stored features (the fast path). One drawn for any
has its audio read (decoded audio is kept in memory as int16, up to `cache_mb`), perturbed, and its fbank
computed with the settings the stored features were made with (compute-feats records them in
<feat_dir>/fbank.json) by `fast_fbank`, Kaldi's algorithm vectorised: speed 1 without noise gives the stored
features to about 1e-3 in log-mel (kaldi-native-fbank, which made them, gives them exactly from the same audio).
It is then normalised with its speaker's CMVN statistics, their mean shifted by (mean of the perturbed features -
mean of the stored ones): the normalisation sees what per-speaker CMVN over perturbed speech would.

Each augmentation has its switch: `speed_factors: [1.0]`, `noise_prob: 0` (or no noise_dirs), `babble_prob: 0`,
`reverb_prob: 0`, `spec_augment: null`; `enabled: false` switches all off. Every draw comes from the numpy
Generator given, so the same generator state gives the same features, whatever the number of threads.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from metarecipe.config import require, require_at_least
from metarecipe.data.audio import read_audio
from metarecipe.data.perturb import perturb_samples
from metarecipe.features.cmvn import apply_cmvn
from metarecipe.features.fast_fbank import fbank_function
from metarecipe.features.fbank import FbankConfig
from metarecipe.features.waveform import (
    NoiseBank,
    from_int16,
    mix_at_snr,
    reverberate,
    room_impulse_response,
    stretch,
    to_int16,
)

MAX_RT60 = 3.0  # seconds: longer is no room a recognizer meets


@dataclass(frozen=True)
class SpecAugmentConfig:
    freq_masks: int = 2
    max_freq_ratio: float = 0.15  # a frequency mask covers at most this share of the mel bins
    time_masks: int = 2
    max_time_ratio: float = 0.05  # a time mask covers at most this share of the frames

    def __post_init__(self):
        require_at_least(self, 0, "freq_masks", "time_masks")
        for name in ("max_freq_ratio", "max_time_ratio"):
            require(0 <= getattr(self, name) <= 1, name, f"must lie in [0, 1], got {getattr(self, name)!r}")


def spec_augment(feats: np.ndarray, rng: np.random.Generator, config: SpecAugmentConfig | None = None,
                 fill: float | None = None) -> np.ndarray:
    """A copy of feats (T, D) with random bands of channels and spans of frames set to `fill` (default: the
    matrix mean, which is 0 after CMVN)."""
    config = config or SpecAugmentConfig()
    out = np.array(feats, copy=True)
    frames, dims = out.shape
    value = float(out.mean()) if fill is None else fill
    max_width = int(config.max_freq_ratio * dims)
    for _ in range(config.freq_masks):
        width = int(rng.integers(0, max_width + 1))
        start = int(rng.integers(0, dims - width + 1))
        out[:, start:start + width] = value
    max_width = int(config.max_time_ratio * frames)
    for _ in range(config.time_masks):
        width = int(rng.integers(0, max_width + 1))
        start = int(rng.integers(0, frames - width + 1))
        out[start:start + width] = value
    return out


def _speed_factors() -> list[float]:
    return [0.9, 1.0, 1.1]


def _require_range(config, name: str, low: float, high: float) -> None:
    """FieldError unless the field is a [min, max] pair within [low, high]."""
    pair = getattr(config, name)
    require(len(pair) == 2 and all(math.isfinite(v) for v in pair) and low <= pair[0] <= pair[1] <= high, name,
            f"must be [min, max] with {low:g} <= min <= max <= {high:g}, got {pair!r}")


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True  # the master switch
    speed_factors: list[float] = field(default_factory=_speed_factors)  # one drawn per utterance; [1.0]: off
    noise_dirs: list[str] = field(default_factory=list)  # directories of noise recordings; none: no noise
    noise_prob: float = 0.5  # share of utterances with noise added
    noise_snr_db: list[float] = field(default_factory=lambda: [5.0, 20.0])  # drawn uniformly from [min, max]
    babble_prob: float = 0.0  # share of utterances with other utterances of the batch mixed in
    babble_utts: int = 3  # at most this many of them
    babble_snr_db: list[float] = field(default_factory=lambda: [10.0, 20.0])
    reverb_prob: float = 0.0  # share of utterances reverberated by a simulated room
    reverb_rt60: list[float] = field(default_factory=lambda: [0.2, 0.8])  # seconds for the tail to fall 60 dB
    reverb_drr_db: list[float] = field(default_factory=lambda: [0.0, 10.0])  # direct-to-reverberant energy ratio
    spec_augment: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)  # null: off
    cache_mb: float = 1024.0  # decoded audio kept in memory (int16), least recently used dropped beyond

    def __post_init__(self):
        require(len(self.speed_factors) > 0 and all(0.5 <= f <= 2.0 for f in self.speed_factors), "speed_factors",
                f"must be a non-empty list of factors in [0.5, 2], got {self.speed_factors!r}")
        for name in ("noise_prob", "babble_prob", "reverb_prob"):
            require(0 <= getattr(self, name) <= 1, name, f"must lie in [0, 1], got {getattr(self, name)!r}")
        require_at_least(self, 1, "babble_utts")
        for name in ("noise_snr_db", "babble_snr_db", "reverb_drr_db"):
            _require_range(self, name, -30.0, 60.0)
        _require_range(self, "reverb_rt60", 0.0, MAX_RT60)
        require(self.reverb_rt60[0] > 0, "reverb_rt60", f"must be above 0, got {self.reverb_rt60!r}")
        require(math.isfinite(self.cache_mb) and self.cache_mb >= 0, "cache_mb",
                f"must be at least 0, got {self.cache_mb!r}")


@dataclass(frozen=True)
class AudioSource:
    """Where an utterance's audio is (a wav.scp value and the span of its segment: end -1 is the end) and the
    fbank settings its stored features were made with."""

    spec: str
    start: float
    end: float
    fbank: FbankConfig


class AudioCache:
    """Decoded audio as int16 by (source, sample rate); beyond max_bytes the least recently used goes. What it
    gives is the same whether it was cached or read again (always through int16). Safe to share by threads."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def samples(self, source: AudioSource, sample_rate: int) -> np.ndarray:
        """float32 samples of the source at sample_rate (AudioError naming it when it cannot be read)."""
        key = (source.spec, source.start, source.end, sample_rate)
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
        if cached is None:
            cached = to_int16(read_audio(source.spec, sample_rate, source.start, source.end))
            with self._lock:
                if key not in self._items:
                    self._items[key] = cached
                    self._bytes += cached.nbytes
                while self._bytes > self.max_bytes and len(self._items) > 1:
                    self._bytes -= self._items.popitem(last=False)[1].nbytes
        return from_int16(cached)


def shifted_stats(stats: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """CMVN statistics (2, D + 1) with the mean moved by shift (D,) and the variance kept."""
    count = stats[0, -1]
    mean = stats[0, :-1] / count
    out = np.array(stats, dtype=np.float64, copy=True)
    out[0, :-1] += shift * count
    out[1, :-1] += count * shift * (2 * mean + shift)
    return out


def normalise(feats: np.ndarray, stats: np.ndarray | None, stored: np.ndarray | None = None) -> np.ndarray:
    """feats normalised with the speaker's statistics (as they are without stats); with the utterance's `stored`
    features, the statistics' mean is shifted by the difference of their means first."""
    if stats is None:
        return np.array(feats, dtype=np.float32, copy=True)
    if stored is not None:
        stats = shifted_stats(stats, feats.mean(axis=0, dtype=np.float64) - stored.mean(axis=0, dtype=np.float64))
    return apply_cmvn(feats, stats)


@dataclass(frozen=True)
class Draw:
    """What is done to one utterance."""

    speed: float
    noise: bool
    babble: bool
    reverb: bool

    @property
    def waveform(self) -> bool:
        return self.speed != 1.0 or self.noise or self.babble or self.reverb


class Augmenter:
    """Augmentation of training utterances (see the module docstring), built once per run: it reads the noise
    recordings (ConfigError naming augment.noise_dirs when a directory is missing or holds no audio) and keeps
    decoded audio for the run. `batch_features` spreads a batch over as many threads as torch uses (fbank,
    resampling and FFTs release the GIL)."""

    def __init__(self, config: AugmentConfig):
        self.config = config
        self.noise = NoiseBank(config.noise_dirs if config.enabled and config.noise_prob > 0 else [])
        self.audio = AudioCache(int(config.cache_mb * 2**20))
        threads = torch.get_num_threads()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="augment") if threads > 1 else None

    @property
    def active(self) -> bool:
        return self.config.enabled

    @property
    def needs_audio(self) -> bool:
        """Whether some utterance may be perturbed on the waveform (its audio and fbank settings are needed)."""
        c = self.config
        return c.enabled and (any(f != 1.0 for f in c.speed_factors) or bool(self.noise) or c.babble_prob > 0
                              or c.reverb_prob > 0)

    def draw(self, rng: np.random.Generator, others: int) -> Draw:
        """The perturbations of one utterance, with `others` other utterances in its batch (for babble)."""
        c = self.config
        speed = float(rng.choice(c.speed_factors))
        noise = bool(self.noise) and rng.random() < c.noise_prob
        babble = c.babble_prob > 0 and others > 0 and rng.random() < c.babble_prob
        reverb = c.reverb_prob > 0 and rng.random() < c.reverb_prob
        return Draw(speed, noise, babble, reverb)

    def batch_features(self, batch: Sequence[tuple[np.ndarray, np.ndarray | None, AudioSource | None]],
                       rng: np.random.Generator) -> list[np.ndarray]:
        """`features` of every (stored, stats, source) of a batch, each with the others as its babble. One seed
        per utterance is drawn from rng first, so the result does not depend on the number of threads."""
        seeds = rng.integers(0, 2**63 - 1, size=len(batch))
        sources = [source for _, _, source in batch]

        def one(i: int) -> np.ndarray:
            stored, stats, source = batch[i]
            others = [s for j, s in enumerate(sources) if j != i and s is not None]
            return self.features(stored, stats, source, np.random.default_rng(seeds[i]), others)

        return list(self._pool.map(one, range(len(batch))) if self._pool else map(one, range(len(batch))))

    def features(self, stored: np.ndarray, stats: np.ndarray | None, source: AudioSource | None,
                 rng: np.random.Generator, others: Sequence[AudioSource] = ()) -> np.ndarray:
        """Normalised (T, D) training features of an utterance: `stored` its stored fbank, `stats` its speaker's
        CMVN statistics (None: not normalised), `source` its audio, `others` the audio of the other utterances of
        its batch (babble). With the augmenter switched off, the stored features normalised."""
        if not self.active:
            return normalise(stored, stats)
        draw = self.draw(rng, len(others))
        perturbed = fbank_function(source.fbank)(self.perturbed(source, draw, rng, others), rng) if draw.waveform \
            else None
        if perturbed is not None and len(perturbed):
            feats = normalise(perturbed, stats, stored)
        else:  # not drawn for the waveform, or sped up to less than a frame: the stored features
            feats = normalise(stored, stats)
        if self.config.spec_augment is not None:
            feats = spec_augment(feats, rng, self.config.spec_augment, fill=None if stats is None else 0.0)
        return feats

    def perturbed(self, source: AudioSource, draw: Draw, rng: np.random.Generator,
                  others: Sequence[AudioSource] = ()) -> np.ndarray:
        """The source's samples at its fbank sample rate, perturbed as drawn: speed, then the room, then babble,
        then noise."""
        c, rate = self.config, source.fbank.sample_rate
        samples = self.audio.samples(source, rate)
        if draw.speed != 1.0:
            samples = perturb_samples(samples, draw.speed, rate)
        if draw.reverb:
            response = room_impulse_response(rate, rng.uniform(*c.reverb_rt60), rng.uniform(*c.reverb_drr_db), rng)
            samples = reverberate(samples, response)
        if draw.babble:
            samples = mix_at_snr(samples, self.babble(others, len(samples), rate, rng), rng.uniform(*c.babble_snr_db))
        if draw.noise:
            samples = mix_at_snr(samples, self.noise.stretch(rate, len(samples), rng), rng.uniform(*c.noise_snr_db))
        return samples

    def babble(self, others: Sequence[AudioSource], length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
        """The sum of 1 to babble_utts of the other utterances, each from a random place, looped to `length`."""
        count = int(rng.integers(1, min(self.config.babble_utts, len(others)) + 1))
        total = np.zeros(length, dtype=np.float32)
        for index in rng.choice(len(others), size=count, replace=False):
            samples = self.audio.samples(others[int(index)], rate)
            total += stretch(samples, length, int(rng.integers(0, len(samples))))
        return total
