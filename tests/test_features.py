"""Features: Kaldi fbank, CMVN statistics, parallel extraction to ark/scp that kaldiio reads back, resume."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from test_commonvoice import make_release

from metarecipe.data import read_data_dir
from metarecipe.data.corpora import get_corpus
from metarecipe.errors import InputError
from metarecipe.features import FbankConfig, apply_cmvn, compute_cmvn, compute_fbank, compute_feats
from metarecipe.features.extract import FBANK_RECORD, read_fbank_record
from metarecipe.features.tables import FeatureError
from metarecipe.io.kaldi_tables import read_table


def test_fbank_has_kaldi_frame_count_and_is_deterministic():
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    feats = compute_fbank(samples)
    assert feats.shape == (1 + (16000 - 400) // 160, 80) and feats.dtype == np.float32
    assert np.array_equal(feats, compute_fbank(samples))
    assert compute_fbank(samples[:300]).shape == (0, 80)


@pytest.mark.skipif(importlib.util.find_spec("torchaudio") is None, reason="torchaudio not installed")
def test_torchaudio_and_kaldi_native_fbank_agree():
    pytest.importorskip("torchaudio.compliance.kaldi", exc_type=ImportError)
    samples = (0.1 * np.random.default_rng(1).standard_normal(24000)).astype(np.float32)
    assert np.allclose(compute_fbank(samples, backend="torchaudio"), compute_fbank(samples), atol=1e-3)


def test_cmvn_statistics_follow_kaldi_layout_and_normalise():
    rng = np.random.default_rng(2)
    parts = [rng.normal(3.0, 2.0, (50, 4)), rng.normal(3.0, 2.0, (70, 4))]
    stats = compute_cmvn(parts)
    joined = np.concatenate(parts)
    assert stats.shape == (2, 5) and stats[0, -1] == 120
    assert np.allclose(stats[0, :-1], joined.sum(0)) and np.allclose(stats[1, :-1], (joined**2).sum(0))
    normalised = apply_cmvn(joined, stats)
    assert np.allclose(normalised.mean(0), 0, atol=1e-5) and np.allclose(normalised.std(0), 1, atol=1e-4)


@pytest.fixture
def data_dir(tmp_path):
    written = get_corpus("commonvoice")(make_release(tmp_path / "cv", "cv-21.0"), tmp_path / "data",
                                        splits=("train",))
    return written["de/train"]


def test_extraction_writes_readable_ark_scp_and_cmvn(data_dir):
    summary = compute_feats(data_dir, nj=2, progress=False)
    assert summary == {"utterances": 4, "frames": summary["frames"], "skipped": 0, "jobs_run": 2}
    feats = dict(kaldiio.load_scp(str(data_dir / "feats.scp")))
    frames = dict(line.split() for line in (data_dir / "utt2num_frames").read_text().splitlines())
    assert sorted(feats) == read_data_dir(data_dir).utterances
    for utt, mat in feats.items():
        assert mat.shape == (int(frames[utt]), 80) and np.isfinite(mat).all()
    cmvn = dict(kaldiio.load_scp(str(data_dir / "cmvn.scp")))
    assert sorted(cmvn) == ["aa11", "bb22"]
    aa11 = [m for u, m in feats.items() if u.startswith("aa11")]
    assert np.allclose(cmvn["aa11"], compute_cmvn(aa11))


def test_rerun_skips_finished_jobs_and_redoes_the_rest_identically(data_dir):
    compute_feats(data_dir, nj=2, progress=False)
    feat_dir = data_dir / "fbank"
    before = dict(kaldiio.load_scp(str(data_dir / "feats.scp")))
    stamp = (feat_dir / "raw_fbank.0.ark").stat().st_mtime_ns
    (feat_dir / "raw_fbank.1.done").unlink()  # as if killed during job 1
    (feat_dir / "raw_fbank.1.ark").write_bytes(b"partial")
    assert compute_feats(data_dir, nj=2, progress=False)["jobs_run"] == 1
    assert (feat_dir / "raw_fbank.0.ark").stat().st_mtime_ns == stamp
    after = dict(kaldiio.load_scp(str(data_dir / "feats.scp")))
    assert sorted(after) == sorted(before) and all(np.array_equal(after[u], before[u]) for u in before)
    assert compute_feats(data_dir, nj=2, progress=False)["jobs_run"] == 0


SOURCE_TABLES = ("text", "wav.scp", "utt2spk", "spk2utt", "utt2dur", "utt2lang", "skipped.tsv")


def test_unreadable_audio_is_listed_source_tables_stay_and_restored_audio_comes_back(data_dir):
    data = read_data_dir(data_dir)
    broken = data.utterances[1]
    clip = Path(data.wav_scp[broken])
    audio = clip.read_bytes()
    sources = {name: (data_dir / name).read_bytes() for name in SOURCE_TABLES if (data_dir / name).exists()}
    assert {"text", "wav.scp", "utt2spk", "spk2utt"} <= set(sources)
    clip.write_bytes(b"\0" * 4096 + audio[4096:])  # corrupt, as a damaged download
    summary = compute_feats(data_dir, nj=2, config=FbankConfig(), progress=False)
    assert summary["skipped"] == 1 and summary["utterances"] == 3
    assert {name: (data_dir / name).read_bytes() for name in sources} == sources  # byte-identical
    report = (data_dir / "feats_skipped.tsv").read_text()
    assert report.startswith(broken + "\t") and report.count("\n") == 1 and str(clip) in report
    assert (data_dir / "fbank" / "skipped.tsv").read_text() == report
    assert broken not in scp_keys(data_dir / "feats.scp") and broken not in scp_keys(data_dir / "utt2num_frames")
    assert scp_keys(data_dir / "cmvn.scp") == ["aa11", "bb22"]  # aa11 keeps its other utterance
    aa11 = [m for u, m in kaldiio.load_scp(str(data_dir / "feats.scp")).items() if u.startswith("aa11")]
    assert np.allclose(kaldiio.load_mat(read_table(data_dir / "cmvn.scp")["aa11"]), compute_cmvn(aa11))
    # a re-run tries the skipped utterance again (its job only) and keeps it skipped: the record stays
    assert compute_feats(data_dir, nj=2, progress=False)["jobs_run"] == 1
    assert (data_dir / "feats_skipped.tsv").read_text() == report
    clip.write_bytes(audio)
    summary = compute_feats(data_dir, nj=2, progress=False)
    assert summary["skipped"] == 0 and summary["utterances"] == 4 and summary["jobs_run"] == 1
    assert scp_keys(data_dir / "feats.scp") == data.utterances
    assert (data_dir / "feats_skipped.tsv").read_text() == ""
    assert {name: (data_dir / name).read_bytes() for name in sources} == sources


def test_a_truncated_or_overwritten_ark_is_redone_by_a_rerun(data_dir):
    compute_feats(data_dir, nj=2, progress=False)
    before = dict(kaldiio.load_scp(str(data_dir / "feats.scp")))
    ark = data_dir / "fbank" / "raw_fbank.1.ark"
    ark.write_bytes(ark.read_bytes()[:-1000])  # as a full disk leaves it
    assert compute_feats(data_dir, nj=2, progress=False)["jobs_run"] == 1
    after = dict(kaldiio.load_scp(str(data_dir / "feats.scp")))
    assert sorted(after) == sorted(before) and all(np.array_equal(after[u], before[u]) for u in before)
    content = bytearray(ark.read_bytes())
    content[-100:] = bytes(100)  # same size, other bytes
    ark.write_bytes(bytes(content))
    assert compute_feats(data_dir, nj=2, progress=False)["jobs_run"] == 1
    assert all(np.array_equal(m, before[u]) for u, m in kaldiio.load_scp(str(data_dir / "feats.scp")).items())


def test_a_job_whose_audio_or_settings_changed_is_redone(data_dir):
    compute_feats(data_dir, nj=2, progress=False)
    data = read_data_dir(data_dir)
    first, last = data.utterances[0], data.utterances[-1]
    wav_scp = (data_dir / "wav.scp").read_text()
    (data_dir / "wav.scp").write_text(wav_scp.replace(data.wav_scp[last], data.wav_scp[first]))  # same count
    assert compute_feats(data_dir, nj=2, progress=False)["jobs_run"] == 1
    feats = dict(kaldiio.load_scp(str(data_dir / "feats.scp")))
    assert np.array_equal(feats[last], feats[first])
    assert compute_feats(data_dir, nj=2, config=FbankConfig(num_mel_bins=40), progress=False)["jobs_run"] == 2
    assert kaldiio.load_mat(read_table(data_dir / "feats.scp")[first]).shape[1] == 40


def test_a_dir_without_utterances_is_an_error_before_anything_is_written(tmp_path):
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        (tmp_path / name).write_text("")
    with pytest.raises(InputError, match=str(tmp_path)):
        compute_feats(tmp_path, nj=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spk2utt", "text", "utt2spk", "wav.scp"]


def scp_keys(path):
    return [line.split()[0] for line in path.read_text().splitlines()]


def test_global_cmvn_sums_the_speakers(data_dir):
    compute_feats(data_dir, nj=1, progress=False)
    per_speaker = dict(kaldiio.load_scp(str(data_dir / "cmvn.scp")))
    total = kaldiio.load_mat(str(data_dir / "fbank" / "global_cmvn.mat"))
    assert np.allclose(total, sum(per_speaker.values()))


def test_extraction_records_its_fbank_settings_beside_the_arks(data_dir):
    config = FbankConfig(num_mel_bins=40, sample_rate=8000)
    compute_feats(data_dir, nj=1, config=config, progress=False)
    record = data_dir / "fbank" / FBANK_RECORD
    assert json.loads(record.read_text()) == dataclasses.asdict(config)
    assert read_fbank_record(data_dir / "fbank") == config
    assert read_fbank_record(data_dir) is None  # no record: features of an earlier version
    record.write_text('{"num_mel_bins": "forty"}')
    with pytest.raises(FeatureError, match=f"{record}: not a record of fbank settings .*num_mel_bins"):
        read_fbank_record(data_dir / "fbank")
