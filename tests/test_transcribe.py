"""bundle -> transcribe on real speech (the asterisk prompts, as mp3 at 44.1 kHz stereo): segments, word times,
formats, the Python API, standard input, bad files skipped and reported; the decoding bundle's LM checks."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from metarecipe.cli.main import main
from metarecipe.data.audio import read_audio_file
from metarecipe.decode.bundle import model_decoding
from metarecipe.errors import InputError
from metarecipe.features.fbank import FbankConfig
from metarecipe.features.frontend import Frontend
from metarecipe.inference.endpoint import MAX_END_EXTENSION, energy_speech_end, last_word_end
from metarecipe.inference.formats import render
from metarecipe.inference.recognizer import Recognizer
from metarecipe.inference.transcript import Segment, Transcript, Word, extend_last_word, words_of
from metarecipe.io.model_files import read_model_file, save_model
from metarecipe.models import BatchedCTCModel, ModelConfig
from metarecipe.text.tokens import TokenTable

PROMPTS = Path("/usr/share/asterisk/sounds/es_MX_f_Allison")
needs_prompts = pytest.mark.skipif(not PROMPTS.is_dir(), reason="the asterisk prompts are not installed (.ci/run "
                                                                 "installs them)")
TEXTS = ["hola buenos días", "el número que usted marcó no existe", "por favor espere"]


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """A small untrained model with a front end, bundled with a character LM: (directory, model, tokens)."""
    tmp = tmp_path_factory.mktemp("bundle")
    tokens = TokenTable.from_texts(TEXTS)
    torch.manual_seed(0)
    model = BatchedCTCModel(ModelConfig(vocab_size=len(tokens), conv_channels=4, d_model=16, gru_hidden=8,
                                        gru_layers=1))
    stats = np.array([[0.0] * 80 + [1.0], [1.0] * 80 + [0.0]]) * 1000
    save_model(tmp / "adapted.pt", model, tokens, {}, Frontend(FbankConfig(), "speaker", stats))
    (tmp / "lm.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert main(["train-lm", "--text", str(tmp / "lm.txt"), "--unit", "char", "--order", "3",
                 "--out", str(tmp / "lm.arpa")]) == 0
    assert main(["bundle", str(tmp / "adapted.pt"), str(tmp / "recognizer.pt"), "--lm", str(tmp / "lm.arpa"),
                 "--lm-unit", "token", "--beam", "4", "--lm-weight", "0.3"]) == 0
    return tmp, model, tokens


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Three prompts with silences between, as mp3 at 44.1 kHz stereo: (path, [(start s, end s) of each])."""
    if not PROMPTS.is_dir():
        pytest.skip("the asterisk prompts are not installed")
    rate, pieces, spans, cursor = 44100, [], [], 0.0
    rng = np.random.default_rng(0)
    for name in ("agent-loggedoff.wav", "conf-getpin.wav", "conf-noempty.wav"):
        gap = rng.normal(0, 1e-3, int(1.5 * rate)).astype(np.float32)
        speech = read_audio_file(PROMPTS / name, rate)
        pieces += [gap, speech]
        spans.append((cursor + len(gap) / rate, cursor + (len(gap) + len(speech)) / rate))
        cursor += (len(gap) + len(speech)) / rate
    pieces.append(np.zeros(rate, np.float32))
    mono = np.concatenate(pieces)
    path = tmp_path_factory.mktemp("audio") / "three prompts.mp3"
    soundfile.write(path, np.stack([mono, 0.7 * mono], axis=1), rate, format="MP3")
    return path, spans


def test_bundle_holds_front_end_lm_and_options_and_checks_a_referenced_lm(bundled, tmp_path):
    tmp, _, tokens = bundled
    loaded = read_model_file(tmp / "recognizer.pt")
    assert loaded.frontend.cmvn == "speaker" and loaded.frontend.global_stats.shape == (2, 81)
    decoding = model_decoding(loaded)
    assert decoding.lm is not None and decoding.lm_unit == "token"
    assert (decoding.options.beam, decoding.options.lm_weight) == (4, 0.3)
    lm = tmp_path / "lm.arpa"
    lm.write_bytes((tmp / "lm.arpa").read_bytes())
    assert main(["bundle", str(tmp / "adapted.pt"), str(tmp_path / "ref.pt"), "--lm", str(lm), "--lm-unit", "token",
                 "--lm-reference"]) == 0
    assert model_decoding(read_model_file(tmp_path / "ref.pt")).lm is not None
    lm.write_text(lm.read_text() + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="lm.arpa has changed since the model was bundled"):
        model_decoding(read_model_file(tmp_path / "ref.pt"))


def test_a_model_without_front_end_is_refused_with_the_fix(bundled, tmp_path, capsys):
    tmp, model, tokens = bundled
    save_model(tmp_path / "old.pt", model, tokens)
    assert main(["bundle", str(tmp_path / "old.pt"), str(tmp_path / "out.pt")]) == 1
    assert "old.pt: holds no feature front end" in capsys.readouterr().err and not (tmp_path / "out.pt").exists()
    with pytest.raises(InputError, match="metarecipe bundle MODEL OUT --data-dir"):
        Recognizer.load(tmp_path / "old.pt")


def test_words_take_their_tokens_times_and_mean_posterior():
    tokens = TokenTable.from_texts(["ab c"])
    a, b, c, space = tokens.ids["a"], tokens.ids["b"], tokens.ids["c"], tokens.ids["<space>"]
    words = words_of([a, b, space, c], [2, 4, 6, 9], [3, 5, 7, 11], [-0.1, -0.3, -0.05, -0.5], tokens, 10.0, 0.04)
    assert words == [Word("ab", 10.08, 10.2, round(np.exp(-0.2), 4)), Word("c", 10.36, 10.44, round(np.exp(-0.5), 4))]
    assert words_of([], [], [], [], tokens, 0.0, 0.04) == []
    assert extend_last_word(words, 10.74)[-1] == Word("c", 10.36, 10.74, words[-1].confidence)  # to the speech end
    assert extend_last_word(words, None) == words  # no end known
    assert extend_last_word(words, 10.3) == words  # never shortened


def test_the_speech_end_is_the_last_loud_frame_before_the_detectors_end():
    """A segment at 16 kHz: faint noise (-60 dBFS), a vowel-like tone at -20 dBFS over [0.3, 0.8) s, a breath at
    -45 dBFS (under END_MARGIN_DB above the floor) over [0.8, 0.9) s, then noise again until 1.2 s."""
    rate, rng = 16000, np.random.default_rng(0)
    time = np.arange(int(1.2 * rate)) / rate
    samples = 1e-3 * rng.standard_normal(len(time))
    vowel = (time >= 0.3) & (time < 0.8)
    samples[vowel] += 0.14 * np.sin(2 * np.pi * 180 * time[vowel])
    breath = (time >= 0.8) & (time < 0.9)
    samples[breath] += 0.0056 * rng.standard_normal(breath.sum())
    assert last_word_end(samples, rate, 0.55, 1.0) == pytest.approx(0.8)
    assert last_word_end(samples, rate, 0.55, 0.72) == 0.72  # never after the detector's end
    assert last_word_end(samples, rate, 0.1, 1.0) == pytest.approx(0.1 + MAX_END_EXTENSION)  # nor far after the word
    assert last_word_end(samples, rate, 0.85, 1.0) is None  # nothing heard after the word
    assert last_word_end(samples, rate, 0.55, None) is None  # a split segment: the speech goes on
    assert energy_speech_end(samples[:100], rate, 0.0, 1.0) is None  # no whole frame


def test_formats_render_words_times_and_cues():
    words = [Word("hola", 1.0, 1.4, 0.9), Word("buenos", 1.5, 1.9, 0.8), Word("días", 2.0, 2.5, 0.7)]
    transcript = Transcript("my file.mp3", 3.0, [Segment(0.8, 2.7, "hola buenos días", words)])
    assert render(transcript, "text") == "hola buenos días\n"
    assert render(transcript, "ctm").splitlines()[1] == "my_file.mp3 1 1.500 0.400 buenos 0.8000"
    assert render(transcript, "srt") == "1\n00:00:01,000 --> 00:00:02,500\nhola buenos días\n"
    assert render(transcript, "vtt") == "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\nhola buenos días\n"
    parsed = json.loads(render(transcript, "json"))
    assert parsed["text"] == "hola buenos días" and parsed["segments"][0]["words"][2]["end"] == 2.5


@needs_prompts
def test_transcribe_finds_each_prompt_and_times_words_inside_it(bundled, recording):
    tmp, _, _ = bundled
    path, spans = recording
    recognizer = Recognizer.load(tmp / "recognizer.pt")
    transcript = recognizer.transcribe(path)
    assert transcript.duration == pytest.approx(spans[-1][1] + 1.0, abs=0.1)
    assert len(transcript.segments) == len(spans)
    for segment, (start, end) in zip(transcript.segments, spans, strict=True):
        assert start - 0.35 <= segment.start and segment.end <= end + 0.35, (segment, start, end)
        assert all(segment.start <= w.start < w.end <= segment.end + 0.04 and 0 < w.confidence <= 1
                   for w in segment.words)
        assert segment.text == " ".join(w.word for w in segment.words)
    samples, rate = soundfile.read(path, dtype="float32")
    from_array = recognizer.transcribe(samples, sample_rate=rate)
    assert [s.text for s in from_array.segments] == [s.text for s in transcript.segments]


@needs_prompts
def test_transcribe_cli_writes_each_format_skips_a_bad_file_and_reads_stdin(bundled, recording, tmp_path):
    tmp, _, _ = bundled
    path, spans = recording
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEfmt nothing")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "metarecipe", "transcribe", str(tmp / "recognizer.pt"), str(path),
                           str(broken), "--format", "srt", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 1 and f"{broken}: cannot decode audio" in done.stderr, done.stderr
    assert "1 of 2 recording(s) failed" in done.stderr
    cues = (out / "three prompts.srt").read_text(encoding="utf-8").split("\n\n")
    assert cues[0].startswith("1\n00:00:0") and " --> " in cues[0]
    with open(path, "rb") as stdin:
        piped = subprocess.run([sys.executable, "-m", "metarecipe", "transcribe", str(tmp / "recognizer.pt"), "-",
                                "--format", "json"], stdin=stdin, capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    assert len(json.loads(piped.stdout)["segments"]) == len(spans)
