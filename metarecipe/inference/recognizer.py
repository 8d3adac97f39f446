"""A recognizer: audio in, a transcript with word times out, from one bundled model file.

    recognizer = Recognizer.load("exp/adapt/multilingual_it_5m_s0/recognizer.pt")
    transcript = recognizer.transcribe("interview.mp3")
    for word in transcript.words:
        print(f"{word.start:7.2f} {word.end:7.2f} {word.word}")

A recording streams through in bounded memory: decoded and resampled block by block (AudioStream), its speech
found by a voice-activity detector (vad.make_vad) while it is spooled to a temporary file of 16 kHz samples,
then read back segment by segment: features as in training (the model file's front end, with the statistics of
the recording's speech standing in for the speaker's), the acoustic model on batches of segments, the CTC beam
search with the bundled LM, and a Viterbi forced alignment of the best hypothesis for word times.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soxr
import torch
from tqdm import tqdm

from metarecipe.decode.bundle import Decoding, model_decoding
from metarecipe.decode.decoder import acoustic_log_probs
from metarecipe.errors import InputError
from metarecipe.features.cmvn import compute_cmvn
from metarecipe.features.frontend import Frontend
from metarecipe.inference.audio_stream import AudioStream, array_blocks
from metarecipe.inference.endpoint import last_word_end
from metarecipe.inference.transcript import Segment, Transcript, extend_last_word, words_of
from metarecipe.inference.vad import SILERO_RATE, make_vad
from metarecipe.io.model_files import ModelFile, read_model_file
from metarecipe.kernels.beam_search import BeamSearchOptions, ctc_beam_search
from metarecipe.kernels.ctc_align import ctc_forced_align
from metarecipe.text.tokens import SPACE

VAD_RATE = SILERO_RATE  # the detector hears 16 kHz audio, whatever rate the model's features take
SUBSAMPLING = 4  # feature frames per acoustic model output frame (two stride-2 convolutions)
MIN_FRAMES = 7  # the fewest feature frames that give one output frame: (T - 3) // 2 + 1, twice, is then 1
BATCH_SECONDS = 60.0  # speech per acoustic model batch: long enough to use the cores, short enough to bound memory
PROGRESS_SECONDS = 60.0  # recordings longer than this show a progress bar


class Span(NamedTuple):
    """A segment of speech in a recording: samples [start, end) at the front end's rate, and where the detector
    heard its speech end (seconds; None where it was split instead)."""

    start: int
    end: int
    speech_end: float | None


class Recognizer:
    """A model file's acoustic model, front end and decoding (search options and LM), with a voice-activity
    detector."""

    def __init__(self, model_file: ModelFile, decoding: Decoding, vad: str = "auto"):
        if model_file.frontend is None:
            raise InputError(f"{model_file.path}: holds no feature front end, which transcription needs: bundle it "
                             "with `metarecipe bundle MODEL OUT --data-dir DATA_DIR` (the data it was adapted on)")
        self.model_file, self.decoding, self.vad = model_file, decoding, vad
        make_vad(vad, VAD_RATE)  # an unknown kind fails here, not at the first recording

    @classmethod
    def load(cls, model, lm=None, lm_unit: str | None = None, options: BeamSearchOptions | None = None,
             vad: str = "auto", device: str = "cpu") -> Recognizer:
        """The recognizer of a model file (training, adapted or compact; bundled by `metarecipe bundle`); lm,
        lm_unit and options replace those it was bundled with."""
        model_file = read_model_file(model, device)
        return cls(model_file, model_decoding(model_file, lm, lm_unit, options), vad)

    @property
    def frontend(self) -> Frontend:
        return self.model_file.frontend

    def transcribe(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None,
                   progress: bool | None = None) -> Transcript:
        """The transcript of an audio file (any format soundfile reads; "-" for standard input) or of samples
        (N,) or (N, channels) at `sample_rate`. progress None: a bar for recordings over PROGRESS_SECONDS."""
        rate = self.frontend.fbank.sample_rate
        with tempfile.TemporaryDirectory(prefix="metarecipe-transcribe-") as tmp:
            spool = Path(tmp) / "audio.f32"
            if isinstance(audio, np.ndarray):
                if sample_rate is None:
                    raise InputError("transcribe: samples given without their sample_rate")
                name = "array"
                count, spans = self._spool(array_blocks(audio, sample_rate, rate), spool)
            else:
                name = os.fspath(audio)
                with AudioStream(name, rate) as stream:
                    count, spans = self._spool(stream, spool)
            duration = count / rate
            samples = np.memmap(spool, np.float32, mode="r", shape=(count,)) if count else np.zeros(0, np.float32)
            show = duration > PROGRESS_SECONDS if progress is None else progress
            segments = self._recognize(samples, spans, name, show)
            del samples  # the memory map closes before its file goes
        return Transcript(name, round(duration, 3), segments)

    def _spool(self, blocks: Iterable[np.ndarray], path: Path) -> tuple[int, list[Span]]:
        """Writes the blocks (mono float32 at the front end's rate) to path while the VAD runs over them (at
        VAD_RATE): (samples written, speech segments as sample spans [start, end) at the front end's rate)."""
        rate = self.frontend.fbank.sample_rate
        vad = make_vad(self.vad, VAD_RATE)
        to_vad = soxr.ResampleStream(rate, VAD_RATE, 1, dtype="float32", quality="HQ") if rate != VAD_RATE else None
        segments, count = [], 0
        with open(path, "wb") as out:
            for block in blocks:
                block = np.ascontiguousarray(block, np.float32)
                out.write(block.tobytes())
                count += len(block)
                segments.extend(vad.accept(to_vad.resample_chunk(block) if to_vad else block))
            if to_vad:
                segments.extend(vad.accept(to_vad.resample_chunk(np.zeros(0, np.float32), last=True)))
            segments.extend(vad.finish())
        return count, [Span(round(s.start_seconds * rate), min(round(s.end_seconds * rate), count),
                            None if s.speech_end is None else s.speech_end / s.sample_rate) for s in segments]

    def _features(self, samples: np.ndarray, spans: list[Span]) -> Iterator[np.ndarray]:
        for start, end, _ in spans:
            feats = self.frontend.features(np.asarray(samples[start:end]))
            if len(feats):
                yield feats

    def _speech_stats(self, samples: np.ndarray, spans: list[Span]) -> np.ndarray | None:
        """CMVN statistics (2, D + 1) of the recording's speech (every segment's features), None without any. The
        features are computed again for decoding: keeping them would grow memory with the recording, and fbank
        costs a few seconds an hour."""
        try:
            return compute_cmvn(self._features(samples, spans))
        except ValueError:  # no segment long enough for a frame
            return None

    def _recognize(self, samples: np.ndarray, spans: list[Span], name: str,
                   progress: bool) -> list[Segment]:
        """The segments of a spooled recording, recognised batch by batch."""
        rate = self.frontend.fbank.sample_rate
        stats = self._speech_stats(samples, spans) if self.frontend.cmvn != "none" else None
        segments = []
        bar = tqdm(total=round(sum(s.end - s.start for s in spans) / rate), unit="s", desc=f"transcribe {name}",
                   disable=not progress)
        for batch in batches(spans, BATCH_SECONDS * rate):
            segments.extend(self._recognize_batch(samples, batch, stats))
            bar.update(round(sum(s.end - s.start for s in batch) / rate))
        bar.close()
        return segments

    def _recognize_batch(self, samples: np.ndarray, spans: list[Span], stats) -> list[Segment]:
        rate, shift = self.frontend.fbank.sample_rate, self.frontend.fbank.frame_shift_ms / 1000
        tokens, decoding = self.model_file.tokens, self.decoding
        feats = [self.frontend.normalise(self.frontend.features(np.asarray(samples[s.start:s.end])), stats)
                 for s in spans]
        kept = [(span, f) for span, f in zip(spans, feats, strict=True) if len(f) >= MIN_FRAMES]
        if not kept:
            return []
        lengths = torch.tensor([len(f) for _, f in kept])
        padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(f) for _, f in kept], batch_first=True)
        log_probs, out_lengths = acoustic_log_probs(self.model_file.model, padded, lengths)
        found = ctc_beam_search(log_probs, out_lengths, decoding.options, decoding.lm, tokens.blank,
                                tokens.ids[SPACE])
        best = [hyps[0].tokens if hyps else [] for hyps in found]
        targets = torch.nn.utils.rnn.pad_sequence([torch.tensor(b, dtype=torch.long) for b in best] or
                                                  [torch.zeros(0, dtype=torch.long)], batch_first=True)
        target_lengths = torch.tensor([len(b) for b in best])
        alignment = ctc_forced_align(log_probs, out_lengths, targets, target_lengths, tokens.blank)
        segments = []
        for i, (span, _) in enumerate(kept):
            u = len(best[i])
            words = words_of(best[i], alignment.starts[i, :u].tolist(), alignment.ends[i, :u].tolist(),
                             alignment.token_scores[i, :u].tolist(), tokens, span.start / rate, SUBSAMPLING * shift)
            if words:
                offset = span.start / rate
                detector_end = None if span.speech_end is None else span.speech_end - offset
                end = last_word_end(np.asarray(samples[span.start:span.end]), rate, words[-1].end - offset,
                                    detector_end)
                words = extend_last_word(words, None if end is None else round(offset + end, 3))
            segments.append(Segment(round(span.start / rate, 3), round(span.end / rate, 3),
                                    " ".join(w.word for w in words), words))
        return segments


def batches(spans: list[Span], samples_per_batch: float) -> Iterator[list[Span]]:
    """Consecutive spans in groups of at most `samples_per_batch` samples (a longer span alone)."""
    batch, total = [], 0
    for span in spans:
        if batch and total + span.end - span.start > samples_per_batch:
            yield batch
            batch, total = [], 0
        batch.append(span)
        total += span.end - span.start
    if batch:
        yield batch
