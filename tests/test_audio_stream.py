"""Streaming audio: any file or standard input as mono blocks at 16 kHz that equal resampling the whole file at
once, arrays likewise, and errors that name the source."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import soxr

from metarecipe.data.audio import AudioError, read_audio_file
from metarecipe.inference.audio_stream import AudioStream, array_blocks

ASTERISK_PROMPT = "/usr/share/asterisk/sounds/es_MX_f_Allison/conf-muted.wav"  # real speech, 8 kHz PCM


def speech_like(rate: int, seconds: float, channels: int) -> np.ndarray:
    """(N, channels) float32: a gliding harmonic tone with noise, different in each channel."""
    rng = np.random.default_rng(channels)
    t = np.arange(int(rate * seconds)) / rate
    pitch = 2 * np.pi * np.cumsum(150 + 50 * np.sin(2 * np.pi * 0.7 * t)) / rate
    waves = [sum(0.2 / k * np.sin(k * (c + 1) * pitch) for k in range(1, 6)) + 0.01 * rng.standard_normal(len(t))
             for c in range(channels)]
    return np.stack(waves, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 44.1 kHz stereo mp3, a 22.05 kHz mono mp3 (MPEG-2: small frames that lean on the bit reservoir), and an
    8 kHz mono wav (a real Asterisk prompt where installed)."""
    directory = tmp_path_factory.mktemp("audio")
    mp3 = str(directory / "stereo.mp3")
    soundfile.write(mp3, speech_like(44100, 7.3, 2), 44100)
    low = str(directory / "low.mp3")
    soundfile.write(low, speech_like(22050, 20.0, 1), 22050)
    wav = str(directory / "prompt.wav")
    if os.path.isfile(ASTERISK_PROMPT):
        soundfile.write(wav, soundfile.read(ASTERISK_PROMPT, dtype="int16")[0], 8000, subtype="PCM_16")
    else:
        soundfile.write(wav, speech_like(8000, 2.5, 1), 8000, subtype="PCM_16")
    return {"mp3": mp3, "mp3-22k": low, "wav": wav}


def one_shot(path: str) -> np.ndarray:
    """The whole file decoded, channels averaged, resampled to 16 kHz in one call."""
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return soxr.resample(samples.mean(axis=1), rate, 16000, quality="HQ")


@pytest.mark.parametrize("kind", ["mp3", "mp3-22k", "wav"])
def test_streamed_blocks_equal_resampling_the_whole_file(files, kind):
    path = files[kind]
    with AudioStream(path, block_seconds=0.37) as stream:
        blocks = list(stream)
        assert list(stream)[3].tolist() == blocks[3].tolist()  # each iteration starts again
    assert stream.name == path
    assert stream.duration == pytest.approx(soundfile.info(path).duration)
    assert len(blocks) > 5 and all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    samples, reference = np.concatenate(blocks), one_shot(path)
    assert len(samples) == len(reference) == len(read_audio_file(path))
    assert np.abs(samples - reference).max() < 1e-4
    assert np.abs(reference).max() > 0.1


def test_standard_input_gives_the_same_samples(files, tmp_path):
    code = ("import sys, numpy as np\nfrom metarecipe.inference.audio_stream import AudioStream\n"
            "with AudioStream('-') as s:\n    sys.stdout.buffer.write(np.concatenate(list(s)).tobytes())\n"
            "    print(s.name, s.duration, file=sys.stderr)")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with open(files["mp3"], "rb") as stdin:
        result = subprocess.run([sys.executable, "-c", code], stdin=stdin, capture_output=True, check=True,
                                env={**os.environ, "TMPDIR": str(temporary)})
    with AudioStream(files["mp3"]) as stream:
        expected = np.concatenate(list(stream))
    assert np.array_equal(np.frombuffer(result.stdout, np.float32), expected)
    assert result.stderr.decode().split()[-2:] == ["-", str(stream.duration)]
    assert list(temporary.iterdir()) == []  # the copy of standard input is gone


def test_arrays_stream_like_files():
    stereo = speech_like(22050, 3.1, 2).astype(np.float64)
    streamed = np.concatenate(list(array_blocks(stereo, 22050, block_seconds=0.5)))
    reference = soxr.resample(stereo.mean(axis=1).astype(np.float32), 22050, 16000, quality="HQ")
    assert streamed.dtype == np.float32 and np.abs(streamed - reference).max() < 1e-4
    mono = stereo[:, 0].astype(np.float32)
    assert np.array_equal(np.concatenate(list(array_blocks(mono, 16000, block_seconds=0.5))), mono)
    assert list(array_blocks(np.zeros(0, np.float32), 8000)) == []
    with pytest.raises(ValueError, match="float array"):
        array_blocks(np.zeros(100, np.int16), 16000)


def write(directory, name, content) -> str:
    (directory / name).write_bytes(content)
    return str(directory / name)


@pytest.mark.parametrize("make, message", [
    (lambda d: str(d / "missing.wav"), "missing.wav: no such file"),
    (lambda d: f"cat {d / 'x.wav'} |", "x.wav |: no such file"),  # a path is never run as a command
    (lambda d: write(d, "empty.wav", b""), "empty.wav: cannot decode audio"),
    (lambda d: write(d, "junk.mp3", b"ID3" + bytes(range(256)) * 8), "junk.mp3: cannot decode audio (corrupt"),
    (lambda d: soundfile.write(d / "none.wav", np.zeros(0), 8000) or str(d / "none.wav"), "none.wav: no samples"),
])
def test_unreadable_files_raise_audio_error_naming_them(tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(AudioError) as err:
        AudioStream(source)
    assert message in str(err.value) and str(err.value).startswith(source)


@pytest.mark.parametrize("content, message", [
    (b"", "standard input: empty"),
    (b"not audio at all" * 100, "standard input: cannot decode audio"),
])
def test_unreadable_standard_input_raises_audio_error(monkeypatch, tmp_path, content, message):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    with pytest.raises(AudioError, match=message):
        AudioStream("-")
    assert list(tmp_path.iterdir()) == []
