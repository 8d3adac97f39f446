"""Streaming voice-activity detection: the speech segments of a recording of any length, in bounded memory.

A detector takes mono float32 blocks (n,) at its sample rate, of any size, through `accept(block)` and returns the
segments that are finished so far, then the rest from `finish()` (after which it is ready for another recording).
Segments come in order, do not overlap, and are the same whatever the block sizes.

Two detectors make per-frame speech decisions, with hysteresis (a higher level to start speech than to stay in it):

- `SileroVAD`: the Silero VAD network (silero-vad package) on 32 ms frames at 16 kHz, through its ONNX sequence model
  (onnxruntime, one thread), which scores a whole block of frames per call: about 13 s per hour of audio on one
  core, against 34 s for the per-frame ONNX model and 94 s for the TorchScript one, with the same probabilities.
- `EnergyVAD`: frame log-energy against an adaptive noise floor (0.4 s per hour of audio), for where silero-vad is
  not installed. It needs some non-speech in the recording to find the floor, takes loud noise for speech, and
  takes a sudden rise of the background level for speech until the floor has risen to it (ENERGY_FLOOR_RISE_*).

One `Segmenter` turns the decisions of either into segments under `SegmentRules` (defaults below, with reasons).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass

import numpy as np

# A speech run shorter than this is dropped: clicks, breaths and coughs are shorter than most words (silero's default).
MIN_SPEECH_SECONDS = 0.25
# Non-speech this long ends a segment: pauses inside a phrase (stop closures, short hesitations) are mostly under
# 0.3 s, so a break at 0.5 s rarely cuts a word, while phrases separated by a breath become segments of their own.
MIN_SILENCE_SECONDS = 0.5
# Added before and after each segment: weak onsets and endings (fricatives, plosive bursts, trailing breathy vowels)
# score below the threshold for a frame or a few. At most half MIN_SILENCE_SECONDS, so neighbours never overlap.
PAD_SECONDS = 0.2
# Longest segment, padding included; a longer speech run is split at its quietest point. The recogniser's memory and
# time grow with segment length, and models trained on clips of a few seconds (Common Voice: at most 10 s) degrade
# on much longer input.
MAX_SECONDS = 20.0
# A split of an over-long run falls in its second half, so no piece but a run's last is shorter than MAX_SECONDS / 2.
_SPLIT_FROM = 0.5
# Scores are averaged over this long when looking for the split point, to cut in a pause rather than at one dip.
_SPLIT_SMOOTH_SECONDS = 0.2

# Silero: the model's own defaults; speech starts at probability >= 0.5 and ends below 0.35.
SILERO_THRESHOLD = 0.5
SILERO_NEG_THRESHOLD = 0.35
SILERO_RATE = 16000
_SILERO_FRAME = 512  # samples per frame the model scores at 16 kHz (32 ms)
_SILERO_CONTEXT = 64  # samples of the previous frame the model sees before each frame
_SILERO_STATE = (1, 1, 128)  # LSTM hidden and cell state, each
_SILERO_MAX_FRAMES = 512  # frames per model call at most (16 s), bounding its working memory

# Energy: 20 ms frames, the usual speech-analysis frame; log-energy of the frame with its mean removed (no DC).
ENERGY_FRAME_SECONDS = 0.02
# Speech starts this many dB above the noise floor (16x the noise power) and stays while above STAY_DB.
ENERGY_START_DB = 12.0
ENERGY_STAY_DB = 6.0
# The noise floor follows any lower frame at once and rises by at most this much per second: slow enough that the
# low frames inside running speech (closures, pauses) pull it back before it reaches speech level, fast enough to
# follow a louder background within seconds.
ENERGY_FLOOR_RISE_DB_PER_SECOND = 3.0
# The floor never goes below this: digital silence (a floor of -inf dB) would make any faint sound speech.
ENERGY_FLOOR_MIN_DB = -70.0
# A frame is judged once the floor has seen this much audio after it, so speech at the very start of a recording is
# judged against the floor of the pause that follows its first words, not against the speech itself.
ENERGY_LOOKAHEAD_SECONDS = 0.5

KINDS = ("auto", "silero", "energy")


@dataclass(frozen=True)
class SpeechSegment:
    """Speech in samples [start, end) of the stream at `sample_rate` Hz, padding included; `speech_end` is the
    sample where the detector heard the speech end (after its last frame at the start threshold, before padding),
    None where the segment was split instead."""

    start: int
    end: int
    sample_rate: int
    speech_end: int | None = None

    @property
    def start_seconds(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_seconds(self) -> float:
        return self.end / self.sample_rate


@dataclass(frozen=True)
class SegmentRules:
    """How per-frame decisions become segments, in seconds (see the constants for the reasons of the defaults)."""

    min_speech: float = MIN_SPEECH_SECONDS
    min_silence: float = MIN_SILENCE_SECONDS
    pad: float = PAD_SECONDS
    max_length: float = MAX_SECONDS


class Segmenter:
    """Per-frame speech decisions (frames of `hop` samples at `sample_rate`) to segments, streaming.

    A segment starts at a speech frame and ends after its last speech frame once `rules.min_silence` of non-speech
    follows (shorter pauses stay inside); it is dropped if shorter than `rules.min_speech`, then padded by
    `rules.pad` each side (never over the previous segment or the ends of the stream). A segment that would exceed
    `rules.max_length` is split, in the second half of its allowed length, where the frame scores (lower: less
    speech-like) averaged over _SPLIT_SMOOTH_SECONDS are lowest; the pieces touch and have no padding where they
    touch. Memory: the scores of the current segment, at most max_length of frames."""

    def __init__(self, hop: int, sample_rate: int, rules: SegmentRules = SegmentRules()):
        if not 0 <= rules.pad <= rules.min_silence / 2:
            raise ValueError(f"pad must be in [0, min_silence / 2], got {rules.pad} with min_silence "
                             f"{rules.min_silence}")
        self.hop, self.sample_rate = hop, sample_rate
        frames = sample_rate / hop  # per second
        self._min_speech = math.ceil(rules.min_speech * frames)
        self._min_silence = max(1, math.ceil(rules.min_silence * frames))
        self._pad = int(round(rules.pad * sample_rate))
        self._max_core = int((rules.max_length * sample_rate - 2 * self._pad) // hop)
        if self._max_core < 2:
            raise ValueError(f"max_length {rules.max_length} s leaves no room inside the padding of {rules.pad} s")
        self._smooth = max(1, int(round(_SPLIT_SMOOTH_SECONDS * frames)))
        self._reset()

    def _reset(self) -> None:
        self._frame = 0  # index of the next frame
        self._start: int | None = None  # first frame of the open segment
        self._last = 0  # its last speech frame
        self._last_sure = 0  # its last frame at the start threshold
        self._scores: list[float] = []  # its frames' scores, from _start
        self._continued = False  # it continues a split segment: no padding before it, no minimum length
        self._previous_end = 0  # sample where the last segment given out ends

    def push(self, speech: bool, score: float, sure: bool) -> list[SpeechSegment]:
        """The segments finished by the next frame's decision and score (lower: less like speech); `sure`: the
        frame reaches the start threshold (below it, inside speech, a frame only keeps the segment open: the
        detector's probability decays for a while after the voice stops, so the end of speech is put after the
        last sure frame)."""
        frame = self._frame
        self._frame += 1
        if self._start is None:
            if not speech:
                return []
            self._start, self._scores, self._continued = frame, [], False
        self._scores.append(score)
        if speech:
            self._last = frame
            if sure:
                self._last_sure = frame
        elif frame - self._last >= self._min_silence:
            return self._close(limit=None)
        if frame + 1 - self._start > self._max_core:
            return [self._split()]
        return []

    def finish(self, total_samples: int) -> list[SpeechSegment]:
        """The last segment, if one is open, with the stream `total_samples` long; then ready for a new stream."""
        segments = self._close(limit=total_samples) if self._start is not None else []
        self._reset()
        return segments

    def _segment(self, start: int, end: int, speech_end: int | None = None) -> SpeechSegment:
        segment = SpeechSegment(max(start, self._previous_end), end, self.sample_rate, speech_end)
        self._previous_end = end
        return segment

    def _close(self, limit: int | None) -> list[SpeechSegment]:
        start, end, continued = self._start, self._last + 1, self._continued
        self._start, self._scores = None, []
        if end <= start or (not continued and end - start < self._min_speech):
            return []
        pad = 0 if continued else self._pad
        padded_end = end * self.hop + self._pad
        speech_end = (max(self._last_sure, start) + 1) * self.hop
        speech_end = speech_end if limit is None else min(speech_end, limit)
        return [self._segment(start * self.hop - pad, padded_end if limit is None else min(padded_end, limit),
                              speech_end)]

    def _split(self) -> SpeechSegment:
        width = self._smooth
        padded = np.pad(np.asarray(self._scores), (width // 2, width - 1 - width // 2), mode="edge")
        smoothed = np.convolve(padded, np.ones(width) / width, mode="valid")  # centred moving average
        first = int(self._max_core * _SPLIT_FROM)
        window = smoothed[first:self._max_core + 1]  # offsets of the next piece's first frame allowed
        low = int(np.argmin(window))
        high = low
        while high + 1 < len(window) and window[high + 1] <= window[low]:
            high += 1
        cut = first + (low + high + 1) // 2  # the middle of the lowest stretch
        start, pad = self._start, 0 if self._continued else self._pad
        self._start, self._scores, self._continued = start + cut, self._scores[cut:], True
        return self._segment(start * self.hop - pad, (start + cut) * self.hop)


class VoiceActivityDetector(ABC):
    """A streaming detector: blocks to whole frames of `hop` samples, whose decisions go to one Segmenter."""

    def __init__(self, hop: int, sample_rate: int, rules: SegmentRules):
        self.sample_rate = sample_rate
        self._hop = hop
        self._segmenter = Segmenter(hop, sample_rate, rules)
        self._pending = np.zeros(0, np.float32)  # samples short of a whole frame
        self._samples = 0

    def accept(self, block: np.ndarray) -> list[SpeechSegment]:
        """The segments finished by the next block (n,) float32 of the stream."""
        block = np.asarray(block, np.float32)
        if block.ndim != 1:
            raise ValueError(f"a block of mono samples (n,) is needed, got shape {block.shape}")
        samples = np.concatenate([self._pending, block])
        self._samples += len(samples) - len(self._pending)
        whole = len(samples) // self._hop * self._hop
        self._pending = samples[whole:]
        return self._judge(samples[:whole].reshape(-1, self._hop)) if whole else []

    def finish(self) -> list[SpeechSegment]:
        """The remaining segments of the stream; the detector is then ready for a new one."""
        segments = self._flush() + self._segmenter.finish(self._samples)
        self._pending = np.zeros(0, np.float32)
        self._samples = 0
        return segments

    @abstractmethod
    def _judge(self, frames: np.ndarray) -> list[SpeechSegment]:
        """The segments finished by the decisions on the next frames (n, hop)."""

    @abstractmethod
    def _flush(self) -> list[SpeechSegment]:
        """The segments finished by deciding every frame still held, at the end of the stream; resets the state."""


@functools.lru_cache(maxsize=1)
def _silero_session():
    """The onnxruntime session of silero-vad's sequence model (one thread), loaded once."""
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad  # its import sets torch to one thread for the whole process
    finally:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():  # its loader uses a deprecated importlib.resources call
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad(sequence=True).session


class SileroVAD(VoiceActivityDetector):
    """Speech where the Silero VAD probability of a 32 ms frame (16 kHz only) reaches `threshold`, until it falls
    below `neg_threshold`. The last partial frame is scored padded with zeros, as silero-vad does."""

    def __init__(self, sample_rate: int = SILERO_RATE, threshold: float = SILERO_THRESHOLD,
                 neg_threshold: float = SILERO_NEG_THRESHOLD, rules: SegmentRules = SegmentRules()):
        if sample_rate != SILERO_RATE:
            raise ValueError(f"the Silero VAD takes {SILERO_RATE} Hz audio, got {sample_rate} Hz")
        super().__init__(_SILERO_FRAME, sample_rate, rules)
        self.threshold, self.neg_threshold = threshold, neg_threshold
        self._session = _silero_session()
        self._reset_model()

    def _reset_model(self) -> None:
        self._state = [np.zeros(_SILERO_STATE, np.float32), np.zeros(_SILERO_STATE, np.float32)]
        self._context = np.zeros(_SILERO_CONTEXT, np.float32)
        self._speaking = False

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Speech probabilities (n,) of the next frames (n, 512) of the stream, carrying the model state."""
        out = []
        for i in range(0, len(frames), _SILERO_MAX_FRAMES):
            chunk = frames[i:i + _SILERO_MAX_FRAMES]
            context = np.concatenate([self._context[None], chunk[:-1, -_SILERO_CONTEXT:]])
            self._context = chunk[-1, -_SILERO_CONTEXT:].copy()
            probs, hidden, cell = self._session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate([context, chunk], axis=1), "h": self._state[0], "c": self._state[1]})
            self._state = [hidden, cell]
            out.append(probs.reshape(-1))
        return np.concatenate(out)

    def _judge(self, frames: np.ndarray) -> list[SpeechSegment]:
        segments = []
        for prob in self.probabilities(frames).tolist():
            self._speaking = prob >= (self.neg_threshold if self._speaking else self.threshold)
            segments += self._segmenter.push(self._speaking, prob, prob >= self.threshold)
        return segments

    def _flush(self) -> list[SpeechSegment]:
        segments = []
        if len(self._pending):
            frame = np.zeros((1, self._hop), np.float32)
            frame[0, :len(self._pending)] = self._pending
            segments = self._judge(frame)
        self._reset_model()
        return segments


class EnergyVAD(VoiceActivityDetector):
    """Speech where a 20 ms frame's log-energy is `start_db` above the adaptive noise floor, until it falls to
    `stay_db` above it (constants ENERGY_* for the floor). A last partial frame is not judged."""

    def __init__(self, sample_rate: int = 16000, start_db: float = ENERGY_START_DB, stay_db: float = ENERGY_STAY_DB,
                 rules: SegmentRules = SegmentRules()):
        super().__init__(int(round(ENERGY_FRAME_SECONDS * sample_rate)), sample_rate, rules)
        self.start_db, self.stay_db = start_db, stay_db
        self._rise = ENERGY_FLOOR_RISE_DB_PER_SECOND * self._hop / sample_rate  # dB per frame
        self._lookahead = int(round(ENERGY_LOOKAHEAD_SECONDS * sample_rate / self._hop))
        self._reset_floor()

    def _reset_floor(self) -> None:
        self._floor: float | None = None
        self._waiting: deque[float] = deque()  # energies (dB) of frames not judged yet
        self._speaking = False

    def _judge(self, frames: np.ndarray) -> list[SpeechSegment]:
        energies = 10 * np.log10(np.maximum(frames.var(axis=1), 1e-12))
        segments = []
        for energy in np.maximum(energies, ENERGY_FLOOR_MIN_DB).tolist():
            if self._floor is None or energy < self._floor:
                self._floor = energy
            else:
                self._floor = min(energy, self._floor + self._rise)
            self._waiting.append(energy)
            if len(self._waiting) > self._lookahead:
                segments += self._decide(self._waiting.popleft())
        return segments

    def _decide(self, energy: float) -> list[SpeechSegment]:
        self._speaking = energy >= self._floor + (self.stay_db if self._speaking else self.start_db)
        return self._segmenter.push(self._speaking, energy, energy >= self._floor + self.start_db)

    def _flush(self) -> list[SpeechSegment]:
        segments = []
        while self._waiting:
            segments += self._decide(self._waiting.popleft())
        self._reset_floor()
        return segments


def silero_available() -> bool:
    """Whether the silero-vad package and onnxruntime (which runs its model) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("silero_vad", "onnxruntime"))


def make_vad(kind: str = "auto", sample_rate: int = 16000,
             rules: SegmentRules = SegmentRules()) -> VoiceActivityDetector:
    """A detector of `kind`: "silero", "energy", or "auto" (silero when installed, else energy, with a warning)."""
    if kind not in KINDS:
        raise ValueError(f"voice-activity detector must be one of {KINDS}, got {kind!r}")
    if kind == "auto" and not silero_available():
        warnings.warn("silero-vad is not installed: using the energy-based voice-activity detector, which takes "
                      "loud noise for speech (pip install silero-vad onnxruntime)", stacklevel=2)
        kind = "energy"
    return EnergyVAD(sample_rate, rules=rules) if kind == "energy" else SileroVAD(sample_rate, rules=rules)
