"""Speed perturbation: Kaldi-style copies whose wav.scp pipes play the audio faster or slower."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile

from metarecipe.data import DataDir, Segment, read_data_dir, write_data_dir
from metarecipe.data.audio import read_audio
from metarecipe.data.perturb import speed_perturb
from metarecipe.features import compute_feats


def tone(path, seconds=1.0, freq=500.0):
    t = np.arange(int(16000 * seconds)) / 16000
    soundfile.write(path, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    return str(path)


def peak_hz(samples):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / 16000)[np.argmax(spectrum)]


def test_perturbed_copies_change_tempo_and_pitch_and_extract(tmp_path):
    data = DataDir({"s1-a": tone(tmp_path / "a.wav")}, {"s1-a": "hallo"}, {"s1-a": "s1"}, {"s1-a": 1.0})
    out = speed_perturb(data, (0.9, 1.1))
    assert out.utterances == ["s1-a", "sp0.9-s1-a", "sp1.1-s1-a"]
    assert out.utt2spk["sp0.9-s1-a"] == "sp0.9-s1" and out.utt2dur["sp0.9-s1-a"] == pytest.approx(1 / 0.9)
    slow = read_audio(out.wav_scp["sp0.9-s1-a"])
    fast = read_audio(out.wav_scp["sp1.1-s1-a"])
    assert abs(len(slow) - 16000 / 0.9) < 3 and abs(len(fast) - 16000 / 1.1) < 3
    assert peak_hz(slow) == pytest.approx(450, abs=3) and peak_hz(fast) == pytest.approx(550, abs=3)
    write_data_dir(out, tmp_path / "sp")
    assert compute_feats(tmp_path / "sp", nj=1, progress=False)["utterances"] == 3


def test_segmented_directories_are_cut_then_perturbed(tmp_path):
    rec = tone(tmp_path / "long.wav", seconds=2.0)
    data = DataDir({"rec": rec}, {"s1-a": "eins", "s1-b": "zwei"}, {"s1-a": "s1", "s1-b": "s1"},
                   segments={"s1-a": Segment("rec", 0.0, 0.5), "s1-b": Segment("rec", 0.5, 2.0)})
    out = speed_perturb(data, (0.9,))
    assert not out.segments and len(read_audio(out.wav_scp["s1-a"])) == 8000
    assert abs(len(read_audio(out.wav_scp["sp0.9-s1-b"])) - 24000 / 0.9) < 3


def test_cli_writes_a_valid_directory(tmp_path):
    data = DataDir({"s1-a": tone(tmp_path / "a.wav")}, {"s1-a": "hallo"}, {"s1-a": "s1"})
    write_data_dir(data, tmp_path / "src")
    result = subprocess.run([sys.executable, "-m", "metarecipe", "speed-perturb", tmp_path / "src",
                             tmp_path / "dst", "--factors", "0.9", "1.1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(read_data_dir(tmp_path / "dst").utterances) == 3
    bad = subprocess.run([sys.executable, "-m", "metarecipe", "speed-perturb", tmp_path / "src", tmp_path / "x",
                          "--factors", "3"], capture_output=True, text=True)
    assert bad.returncode == 1 and "speed factor must lie in [0.5, 2]" in bad.stderr
