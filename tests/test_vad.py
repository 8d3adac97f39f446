"""Voice-activity detection on real speech (Asterisk voice prompts, Spanish and Italian), streamed in any blocks:
one segment per prompt where it was placed, none in silence, long speech split; and the segmenter's rules."""

import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
import torch

from metarecipe.inference import vad
from metarecipe.inference.vad import EnergyVAD, Segmenter, SegmentRules, SileroVAD, SpeechSegment, make_vad

SOUNDS = Path("/usr/share/asterisk/sounds")
PROMPTS = ["es_MX_f_Allison/vm-deleted.wav", "it_IT_m_Carlo/vm-deleted.wav", "es_MX_f_Allison/conf-muted.wav",
           "it_IT_m_Carlo/conf-muted.wav", "es_MX_f_Allison/vm-messages.wav", "it_IT_m_Carlo/vm-goodbye.wav",
           "es_MX_f_Allison/vm-onefor.wav", "it_IT_m_Carlo/agent-loggedoff.wav",
           "es_MX_f_Allison/conf-hasjoin.wav", "it_IT_m_Carlo/auth-thankyou.wav"]
RATE = 16000
TOLERANCE = 0.25  # seconds between a segment's boundary (less its padding) and where its prompt was placed
KINDS = [SileroVAD, EnergyVAD]
needs_prompts = pytest.mark.skipif(not all((SOUNDS / p).is_file() for p in PROMPTS),
                                   reason="asterisk-core-sounds-es-wav and -it-wav are not installed")


def trimmed(path: Path) -> np.ndarray:
    """A prompt (8 kHz) without the 10 ms frames at its ends more than 40 dB below its loudest frame."""
    samples, rate = soundfile.read(path, dtype="float32")
    assert rate == 8000
    frames = len(samples) // 80
    energy = 10 * np.log10(np.mean(samples[:frames * 80].reshape(frames, 80) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(energy > energy.max() - 40)
    return samples[loud[0] * 80:(loud[-1] + 1) * 80]


def recording(gaps: list[float], noise_dbfs: float | None = None, repeat: int = 1):
    """The prompts (`repeat` times) after silences of `gaps` seconds (cycled), and a last gap, at 16 kHz, with white
    noise at `noise_dbfs` if given; and where each prompt lies, (start, end) in seconds."""
    parts, spans, at = [], [], 0
    for k, path in enumerate(PROMPTS * repeat):
        gap = np.zeros(int(gaps[k % len(gaps)] * 8000), np.float32)
        speech = trimmed(SOUNDS / path)
        spans.append(((at + len(gap)) / 8000, (at + len(gap) + len(speech)) / 8000))
        parts += [gap, speech]
        at += len(gap) + len(speech)
    parts.append(np.zeros(8000, np.float32))
    samples = soxr.resample(np.concatenate(parts), 8000, RATE, quality="HQ").astype(np.float32)
    if noise_dbfs is not None:
        samples += 10 ** (noise_dbfs / 20) * np.random.default_rng(1).standard_normal(len(samples)).astype(np.float32)
    return samples, spans


@pytest.fixture(scope="module")
def spaced():
    """Prompts 1-2 s apart: clean, and with noise at -50 dBFS."""
    gaps = list(np.random.default_rng(0).uniform(1.0, 2.0, len(PROMPTS)))
    return {noise: recording(gaps, noise) for noise in (None, -50.0)}


def segments_of(detector, samples: np.ndarray, block: int | None = None) -> list[SpeechSegment]:
    if block is None:
        return detector.accept(samples) + detector.finish()
    sizes = np.random.default_rng(block).integers(1, 2 * block, len(samples) // block + 1)
    cuts = np.minimum(np.cumsum(sizes), len(samples))
    found = []
    for piece in np.split(samples, cuts):
        found += detector.accept(piece)
    return found + detector.finish()


def assert_ordered(found: list[SpeechSegment], length: int) -> None:
    assert all(0 <= s.start < s.end <= length for s in found)
    assert all(a.end <= b.start for a, b in pairwise(found))


@needs_prompts
@pytest.mark.parametrize("noise", [None, -50.0], ids=["clean", "noise"])
@pytest.mark.parametrize("kind", KINDS, ids=["silero", "energy"])
def test_each_prompt_is_one_segment_where_it_was_placed(spaced, kind, noise):
    samples, spans = spaced[noise]
    found = segments_of(kind(), samples)
    assert_ordered(found, len(samples))
    pad = SegmentRules().pad
    assert len(found) == len(spans), [(s.start_seconds, s.end_seconds) for s in found]
    for segment, (start, end) in zip(found, spans, strict=True):
        assert abs(segment.start_seconds + pad - start) < TOLERANCE, (segment, start)
        assert abs(segment.end_seconds - pad - end) < TOLERANCE, (segment, end)


@needs_prompts
@pytest.mark.parametrize("kind", KINDS, ids=["silero", "energy"])
def test_speech_from_the_first_sample_is_found(kind):
    samples, spans = recording([0.0] + [1.5] * (len(PROMPTS) - 1))
    found = segments_of(kind(), samples)
    assert len(found) == len(spans)
    assert found[0].start == 0 and abs(found[0].end_seconds - SegmentRules().pad - spans[0][1]) < TOLERANCE


@needs_prompts
@pytest.mark.parametrize("kind", KINDS, ids=["silero", "energy"])
def test_blocks_of_any_size_give_the_same_segments(spaced, kind):
    samples, _ = spaced[-50.0]
    detector = kind()
    whole = segments_of(detector, samples)
    assert whole
    assert segments_of(detector, samples, block=700) == whole  # the same detector again: finish() reset it
    assert segments_of(kind(), samples, block=6000) == whole


@needs_prompts
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # silero-vad's own loader
def test_silero_probabilities_streamed_equal_the_packages_own(spaced):
    from silero_vad import load_silero_vad

    samples = spaced[-50.0][0][:312 * 512]  # 10 s
    frames = samples.reshape(-1, 512)
    detector = SileroVAD()
    streamed = np.concatenate([detector.probabilities(frames[i:i + n]) for i, n in ((0, 1), (1, 40), (41, 271))])
    reference = load_silero_vad(onnx=True).audio_forward(torch.from_numpy(samples), RATE).numpy().reshape(-1)
    assert np.allclose(streamed, reference, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS, ids=["silero", "energy"])
@pytest.mark.parametrize("noise", [None, -50.0], ids=["digital", "noise"])
def test_a_minute_of_silence_has_no_segments(kind, noise):
    samples = np.zeros(60 * RATE, np.float32)
    if noise is not None:
        samples += 10 ** (noise / 20) * np.random.default_rng(2).standard_normal(len(samples)).astype(np.float32)
    assert segments_of(kind(), samples, block=RATE) == []


@needs_prompts
@pytest.mark.parametrize("kind", KINDS, ids=["silero", "energy"])
def test_speech_longer_than_the_maximum_is_split_at_pauses(kind):
    samples, spans = recording([0.25], repeat=3)  # ~45 s of speech with pauses shorter than a segment break
    rules = SegmentRules()
    found = segments_of(kind(), samples)
    assert_ordered(found, len(samples))
    assert len(found) >= 3
    assert all(s.end - s.start <= rules.max_length * RATE for s in found)
    assert found[0].start_seconds <= spans[0][0] and found[-1].end_seconds >= spans[-1][1]
    for a, b in pairwise(found):
        assert a.end == b.start  # the pieces of one run touch, and are cut outside the prompts
        assert not any(start < a.end_seconds < end for start, end in spans), a.end_seconds


def decided(pattern: str, rules: SegmentRules, scores=None, total=None, hop: int = 160):
    """The segments of a pattern of decisions in frames of 10 ms: '#' sure speech, '+' speech below the start
    threshold (it keeps a segment open), '.' not."""
    segmenter = Segmenter(hop, RATE, rules)
    found = []
    for i, mark in enumerate(pattern):
        found += segmenter.push(mark in "#+", 1.0 if scores is None else scores[i], mark == "#")
    return found + segmenter.finish(len(pattern) * hop if total is None else total)


def decisions(pattern: str, rules: SegmentRules, scores=None, total=None, hop: int = 160):
    """Segments (start, end) in frames of 10 ms from a pattern of decisions (see `decided`)."""
    return [(s.start / hop, s.end / hop) for s in decided(pattern, rules, scores, total, hop)]


def test_segmenter_rules():
    rules = SegmentRules(min_speech=0.05, min_silence=0.1, pad=0.02, max_length=1.0)
    # a pause shorter than min_silence stays inside; runs shorter than min_speech are dropped; padding both sides
    assert decisions("." * 10 + "#" * 10 + "." * 9 + "#" * 5 + "." * 10 + "####" + "." * 20, rules=rules) == \
           [(8, 36)]
    # padding stops at the ends of the stream; a segment open at the end is closed there
    assert decisions("##########" + "." * 15 + "#####", rules=rules, total=30 * 160 + 50) == \
           [(0, 12), (23, 30 + 50 / 160)]
    with pytest.raises(ValueError, match="pad must be"):
        Segmenter(160, RATE, SegmentRules(min_silence=0.3, pad=0.2))


def test_speech_ends_after_the_last_sure_frame_and_a_split_piece_has_no_end():
    rules = SegmentRules(min_speech=0.05, min_silence=0.1, pad=0.02, max_length=1.0)
    (segment,) = decided("." * 10 + "#" * 10 + "++++" + "." * 20, rules=rules)
    assert (segment.start, segment.end, segment.speech_end) == (8 * 160, 26 * 160, 20 * 160)
    pieces = decided("#" * 230, rules=rules)
    assert [p.speech_end for p in pieces] == [None, None, 230 * 160]


def test_segmenter_splits_a_long_run_in_the_middle_of_its_lowest_scores():
    rules = SegmentRules(min_speech=0.05, min_silence=0.1, pad=0.02, max_length=1.0)  # at most 96 unpadded frames
    scores = np.ones(230)
    scores[10:40] = 0.0  # the quietest stretch, but in the first half of the allowed length: a piece too short
    scores[60:90] = 0.1  # the quietest stretch of frames 48-96, where the first cut may fall
    scores[130:160] = 0.2  # the quietest of frames 123-171, for the second cut
    found = decisions("#" * 230, rules=rules, scores=scores)
    assert found == [(0, 75), (75, 145), (145, 230)]


def test_make_vad_kinds(monkeypatch):
    assert isinstance(make_vad("energy", 8000), EnergyVAD)
    assert isinstance(make_vad("auto"), SileroVAD)
    with pytest.raises(ValueError, match="16000 Hz"):
        make_vad("silero", 8000)
    with pytest.raises(ValueError, match="one of"):
        make_vad("webrtc")
    monkeypatch.setattr(vad, "silero_available", lambda: False)
    with pytest.warns(UserWarning, match="energy-based"):
        assert isinstance(make_vad("auto"), EnergyVAD)


def test_loading_silero_keeps_torch_threads(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "silero_vad"]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh: silero_vad/model.py sets one thread at import
    vad._silero_session.cache_clear()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        SileroVAD()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
        vad._silero_session.cache_clear()
