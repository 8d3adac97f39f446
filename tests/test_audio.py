"""Audio input: real wav/flac/mp3/ogg files, Kaldi pipe commands, cuts, resampling and clear errors."""

import numpy as np
import pytest
import soundfile

from metarecipe.data.audio import AudioError, duration, read_audio


def sine_file(path, rate=22050, seconds=1.5, freq=440.0, channels=2):
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    soundfile.write(path, np.stack([wave] * channels, axis=1), rate)
    return path


def dominant_frequency(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)]


@pytest.mark.parametrize("suffix", ["wav", "flac", "mp3", "ogg"])
def test_files_of_every_format_come_out_mono_at_the_target_rate(tmp_path, suffix):
    path = sine_file(tmp_path / f"tone.{suffix}")
    samples = read_audio(str(path), 16000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 24000) <= (1200 if suffix == "mp3" else 2)  # mp3 adds encoder padding
    assert abs(dominant_frequency(samples, 16000) - 440) < 2
    assert abs(duration(str(path)) - 1.5) < 0.08


def test_cut_and_pipe_command_give_the_same_samples_as_the_file(tmp_path):
    path = sine_file(tmp_path / "tone.wav", rate=16000, channels=1)
    whole = read_audio(str(path))
    cut = read_audio(str(path), start=0.5, end=1.0)
    assert len(cut) == 8000 and np.allclose(cut, whole[8000:16000])
    piped = read_audio(f"cat {path} |")
    assert np.array_equal(piped, whole)
    assert duration(f"cat {path} |") == pytest.approx(1.5)


def file_with(directory, name, content):
    (directory / name).write_bytes(content)
    return str(directory / name)


@pytest.mark.parametrize("make, message", [
    (lambda d: str(d / "missing.wav"), "missing.wav: no such file"),
    (lambda d: file_with(d, "empty.wav", b""), "cannot decode audio"),
    (lambda d: file_with(d, "junk.mp3", b"ID3" + bytes(range(256)) * 8), "cannot decode audio"),
    (lambda d: "false |", "command 'false |' exited with status 1"),
    (lambda d: "true |", "command 'true |' wrote no audio"),
])
def test_unreadable_sources_raise_audio_error_naming_them(tmp_path, make, message):
    with pytest.raises(AudioError) as err:
        read_audio(make(tmp_path))
    assert message in str(err.value)


def test_cut_past_the_end_is_an_error(tmp_path):
    path = sine_file(tmp_path / "tone.wav", rate=16000, channels=1)
    with pytest.raises(AudioError, match="no samples in"):
        read_audio(str(path), start=2.0, end=3.0)
