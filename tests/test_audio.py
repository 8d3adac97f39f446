"""Audio input: real wav/flac/mp3/ogg files, Kaldi pipe commands, cuts, resampling and clear errors."""

import numpy as np
import pytest
import soundfile

from metarecipe.data.audio import AudioError, duration, file_duration, read_audio, read_audio_file


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


@pytest.mark.parametrize("suffix", ["wav", "flac", "mp3"])
def test_a_corrupt_file_that_exists_says_it_cannot_be_decoded_and_why(tmp_path, suffix):
    whole = sine_file(tmp_path / f"tone.{suffix}").read_bytes()
    garbage = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    broken = file_with(tmp_path, f"broken.{suffix}", whole[:4] + garbage)
    for read in (read_audio, read_audio_file, duration, file_duration):
        with pytest.raises(AudioError) as err:
            read(broken)
        assert str(err.value).startswith(f"{broken}: cannot decode audio (")
        assert "does not exist" not in str(err.value)


def test_a_corrupt_mp3_is_not_reported_as_a_missing_file(tmp_path):
    mp3 = sine_file(tmp_path / "tone.mp3").read_bytes()
    truncated = file_with(tmp_path, "truncated.mp3", mp3[:200])
    with pytest.raises(AudioError) as err:
        file_duration(truncated)
    assert str(err.value) == f"{truncated}: cannot decode audio (corrupt or truncated: no audio frames found)"


def test_a_file_name_ending_in_a_pipe_is_read_as_a_file_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tone = sine_file(tmp_path / "tone.wav", rate=16000, channels=1)
    named = tmp_path / "x.wav; touch PWNED |"
    named.write_bytes(tone.read_bytes())
    assert np.array_equal(read_audio_file(named), read_audio(str(tone)))
    assert file_duration(str(named)) == pytest.approx(1.5)
    with pytest.raises(AudioError, match="no such file"):
        read_audio_file("touch PWNED |")
    assert not (tmp_path / "PWNED").exists()
