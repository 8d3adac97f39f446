"""`metarecipe compute-feats` killed with SIGKILL mid-way, then re-run: finished jobs are kept, features equal."""

import os
import signal
import subprocess
import sys
import time

import kaldiio
import numpy as np
import soundfile

from metarecipe.data import DataDir, write_data_dir


def wav_data_dir(root, utterances=240, seconds=2.0):
    """Jobs are split by utt2dur: the first 20 utterances claim 24 s but hold 0.5 s, so the first of 3 jobs
    has far less audio than the others and finishes well before them, however loaded the machine."""
    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True)
    data = DataDir({}, {}, {})
    for i in range(utterances):
        spk = f"spk{i % 8}"
        utt = f"{spk}-utt{i:04d}"
        path = root / "wav" / f"{utt}.wav"
        actual = 0.5 if i < 20 else seconds
        soundfile.write(path, (0.1 * rng.standard_normal(int(16000 * actual))).astype(np.float32), 16000)
        data.wav_scp[utt], data.text[utt], data.utt2spk[utt] = str(path), "hallo", spk
        data.utt2dur[utt] = 24.0 if i < 20 else seconds
    return write_data_dir(data, root / "data")


def compute_feats(data_dir, background=False):
    command = [sys.executable, "-m", "metarecipe", "compute-feats", str(data_dir), "--nj", "3"]
    if background:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return subprocess.run(command, capture_output=True, text=True, check=True)


def test_killed_extraction_resumes_without_redoing_finished_jobs(tmp_path):
    reference_dir = wav_data_dir(tmp_path / "a")
    compute_feats(reference_dir)
    reference = dict(kaldiio.load_scp(str(reference_dir / "feats.scp")))

    data_dir = wav_data_dir(tmp_path / "b")
    feat_dir = data_dir / "fbank"
    process = compute_feats(data_dir, background=True)
    deadline = time.time() + 120
    while not list(feat_dir.glob("raw_fbank.*.done")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # the command and its worker processes
    process.wait()
    done = sorted(p.name for p in feat_dir.glob("raw_fbank.*.done"))
    assert 1 <= len(done) < 3, f"kill came too late or too early: {done}"
    stamps = {name: (feat_dir / name.replace(".done", ".ark")).stat().st_mtime_ns for name in done}

    rerun = compute_feats(data_dir)
    assert f"{3 - len(done)} of 3 jobs run" in rerun.stdout
    for name, stamp in stamps.items():
        assert (feat_dir / name.replace(".done", ".ark")).stat().st_mtime_ns == stamp
    resumed = dict(kaldiio.load_scp(str(data_dir / "feats.scp")))
    assert sorted(resumed) == sorted(reference)
    assert all(np.array_equal(resumed[u], reference[u]) for u in reference)
    assert not list(feat_dir.glob(".*.tmp"))
