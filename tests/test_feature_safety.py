"""Reading features checks everything first: damaged arks, incomplete tables, missing utt2lang, empty dirs and
tasks too small for their support and query sets are InputErrors naming the thing, before any work starts."""

import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from test_commonvoice import make_release

from metarecipe.config import ConfigError
from metarecipe.data import read_data_dir
from metarecipe.data.corpora import get_corpus
from metarecipe.data.datadir import DataDirError
from metarecipe.errors import InputError
from metarecipe.features import FbankConfig, compute_feats
from metarecipe.features.tables import FeatureError, matrix_shapes, split_location
from metarecipe.io.kaldi_tables import read_table
from metarecipe.io.model_files import save_model
from metarecipe.io.pools import load_pools
from metarecipe.meta.sampling import check_task_seconds, collate, draw_meta_batch
from metarecipe.models import BatchedCTCModel, ModelConfig
from metarecipe.text.tokens import TokenTable


@pytest.fixture
def prepared(tmp_path):
    written = get_corpus("commonvoice")(make_release(tmp_path / "cv", "cv-21.0"), tmp_path / "data",
                                        splits=("train", "dev"))
    return written["de/train"], written["de/dev"]


@pytest.fixture
def dirs(prepared):
    for path in prepared:
        compute_feats(path, nj=1, progress=False)
    return prepared


def corrupt(clip):
    Path(clip).write_bytes(b"ID3\x04" + bytes(range(256)) * 4)


def tokens_of(*data_dirs):
    return TokenTable.from_texts(t for d in data_dirs for t in read_data_dir(d).text.values())


def last_entry(data_dir):
    """(utterance, ark file) of the last matrix in the ark: the one a truncation cuts."""
    utt, value = list(read_table(data_dir / "feats.scp").items())[-1]
    return utt, split_location(value)[0]


def test_a_truncated_ark_is_found_before_loading_naming_utterance_and_file(dirs):
    train, _ = dirs
    utt, ark = last_entry(train)
    ark.write_bytes(ark.read_bytes()[:-1000])
    with pytest.raises(FeatureError) as err:
        load_pools([train], tokens_of(train))
    message = str(err.value)
    assert f"'{utt}'" in message and str(ark) in message and "truncated" in message
    assert f"metarecipe compute-feats {train}" in message
    assert compute_feats(train, nj=1, progress=False)["jobs_run"] == 1  # as the message says: repaired
    assert len(load_pools([train], tokens_of(train))["de"]) == 4


def test_a_damaged_header_or_frame_count_is_found(dirs):
    train, _ = dirs
    tokens = tokens_of(train)
    utt, value = next(iter(read_table(train / "feats.scp").items()))
    ark, offset = split_location(value)
    content = ark.read_bytes()
    ark.write_bytes(content[:offset] + b"XX" + content[offset + 2:])
    with pytest.raises(FeatureError, match=f"'{utt}': {ark}: no Kaldi binary matrix at byte {offset}"):
        load_pools([train], tokens)
    ark.write_bytes(content)
    frames = (train / "utt2num_frames").read_text()
    count = read_table(train / "utt2num_frames")[utt]
    (train / "utt2num_frames").write_text(frames.replace(f"{utt} {count}\n", f"{utt} {int(count) + 1}\n"))
    with pytest.raises(FeatureError, match=f"'{utt}' has {count} frames, utt2num_frames says {int(count) + 1}"):
        load_pools([train], tokens)


def test_damaged_cmvn_statistics_are_found(dirs):
    train, _ = dirs
    cmvn_ark = train / "fbank" / "cmvn.ark"
    cmvn_ark.write_bytes(cmvn_ark.read_bytes()[:-8])
    with pytest.raises(FeatureError, match=r"cmvn.scp: 'bb22': .*cmvn.ark: the 2 x 81 matrix .* \(truncated\)"):
        load_pools([train], tokens_of(train))


def test_an_ark_damaged_after_the_check_fails_naming_the_utterance(dirs):
    train, _ = dirs
    pool = load_pools([train], tokens_of(train))["de"]
    utt, ark = last_entry(train)
    ark.write_bytes(ark.read_bytes()[:-1000])
    damaged = next(u for u in pool if u.utt == utt)
    with pytest.raises(FeatureError, match=f"utterance '{utt}': cannot read the matrix at {ark}"):
        collate([[damaged]])


def test_without_utt2lang_tasks_by_language_are_an_error_and_one_pool_needs_none(dirs):
    train, _ = dirs
    tokens = tokens_of(train)
    (train / "utt2lang").unlink()  # as `prepare-data kaldi` without lang= writes it
    with pytest.raises(DataDirError, match=r"utt2lang: missing; .*prepare-data kaldi .*--opt lang=xx"):
        load_pools([train], tokens)
    pools = load_pools([train], tokens, group_by=None)
    assert list(pools) == ["all"] and [u.utt for u in pools["all"]] == read_data_dir(train).utterances
    assert sorted(load_pools([train], tokens, group_by="spk")) == ["aa11", "bb22"]
    with pytest.raises(DataDirError, match="utt2accent: missing"):
        load_pools([train], tokens, group_by="accent")


def test_feats_scp_lacking_an_utterance_is_an_error_unless_compute_feats_listed_it(dirs, capsys):
    train, _ = dirs
    tokens = tokens_of(train)
    utt = read_data_dir(train).utterances[1]
    for name in ("feats.scp", "utt2num_frames"):
        lines = (train / name).read_text().splitlines(keepends=True)
        (train / name).write_text("".join(line for line in lines if not line.startswith(utt + " ")))
    with pytest.raises(InputError, match=f"{train / 'feats.scp'}: lacks 1 utterance.* e.g. '{utt}'"):
        load_pools([train], tokens)
    compute_feats(train, nj=1, progress=False)  # rewrites the tables whole
    assert len(load_pools([train], tokens)["de"]) == 4
    for name in ("feats.scp", "utt2num_frames"):
        lines = (train / name).read_text().splitlines(keepends=True)
        (train / name).write_text("".join(line for line in lines if not line.startswith(utt + " ")))
    (train / "feats_skipped.tsv").write_text(f"{utt}\tcannot read the audio\n")
    capsys.readouterr()
    pool = load_pools([train], tokens)["de"]
    assert utt not in [u.utt for u in pool] and len(pool) == 3
    warning = capsys.readouterr().err.splitlines()
    assert len(warning) == 1 and "1 utterance(s) without features left out" in warning[0]


def test_a_speaker_whose_audio_is_all_unreadable_has_no_statistics_and_the_rest_loads(prepared, capsys):
    train, _ = prepared
    data = read_data_dir(train)
    for utt in data.spk2utt["bb22"]:
        corrupt(data.wav_scp[utt])
    assert compute_feats(train, nj=1, progress=False)["skipped"] == 2
    assert list(read_table(train / "cmvn.scp")) == ["aa11"]
    pool = load_pools([train], tokens_of(train))["de"]
    assert [u.utt for u in pool] == data.spk2utt["aa11"] and all(u.cmvn for u in pool)
    assert "2 utterance(s) without features" in capsys.readouterr().err


def test_a_dir_without_utterances_is_an_error(dirs, tmp_path):
    train, _ = dirs
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "feats.scp", "utt2num_frames"):
        (empty / name).write_text("")
    with pytest.raises(InputError, match=str(empty)):
        load_pools([empty], tokens_of(train))


def test_a_dir_whose_audio_is_all_unreadable_says_so(prepared):
    train, _ = prepared
    data = read_data_dir(train)
    for utt in data.utterances:
        corrupt(data.wav_scp[utt])
    with pytest.raises(FeatureError, match=f"no utterance gave features; .* {train / 'feats_skipped.tsv'}"):
        compute_feats(train, nj=1, progress=False)
    assert list(read_table(train / "feats_skipped.tsv")) == data.utterances
    with pytest.raises(InputError, match=f"{train}.*no utterance has features"):
        load_pools([train], tokens_of(train))


def test_dirs_with_features_of_different_dimensions_do_not_mix(dirs):
    train, dev = dirs
    compute_feats(dev, nj=1, config=FbankConfig(num_mel_bins=40), progress=False)
    with pytest.raises(FeatureError, match=f"different dimensions: {train}: 80, {dev}: 40"):
        load_pools([train, dev], tokens_of(train, dev))


@pytest.mark.parametrize("method", [None, 2, 3, 5])  # float, Kaldi's CM, CM2 and CM3 compression
def test_matrix_headers_give_kaldiio_shapes_and_find_truncation(tmp_path, method):
    rng = np.random.default_rng(0)
    mats = {"a": rng.standard_normal((7, 5)).astype(np.float32), "b": rng.standard_normal((3, 5))}
    kaldiio.save_ark(str(tmp_path / "m.ark"), mats, scp=str(tmp_path / "m.scp"), compression_method=method)
    entries = read_table(tmp_path / "m.scp")
    assert matrix_shapes(tmp_path / "m.scp", entries, "") == {k: kaldiio.load_mat(v).shape for k, v in entries.items()}
    ark = tmp_path / "m.ark"
    ark.write_bytes(ark.read_bytes()[:-1])
    with pytest.raises(FeatureError, match="'b': .* ends at byte"):
        matrix_shapes(tmp_path / "m.scp", entries, "")


def test_tasks_too_small_for_support_and_query_are_named_up_front(dirs):
    train, _ = dirs
    pools = load_pools([train], tokens_of(train), group_by="spk")
    check_task_seconds(pools, 0.4, 0.4)  # each speaker: 2 clips of about 0.6 s
    with pytest.raises(ConfigError, match=r"task 'aa11' has 1\.\d\d s of speech in 2 utterance\(s\).* 1 s and 0.4 s"):
        check_task_seconds(pools, 1.0, 0.4)
    with pytest.raises(ConfigError, match="task 'bb22'"):
        draw_meta_batch(pools, ["bb22"], 0.4, 5.0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="must be positive"):
        check_task_seconds(pools, 0.0, 0.4)


def test_decode_of_a_truncated_ark_is_one_line_on_stderr_and_writes_nothing(dirs, tmp_path):
    train, _ = dirs
    tokens = tokens_of(train)
    model = BatchedCTCModel(ModelConfig(vocab_size=len(tokens), conv_channels=4, d_model=16, gru_hidden=8,
                                        gru_layers=1))
    save_model(tmp_path / "model.pt", model, tokens, {})
    utt, ark = last_entry(train)
    ark.write_bytes(ark.read_bytes()[:-1000])
    out = tmp_path / "decode"
    result = subprocess.run([sys.executable, "-m", "metarecipe", "decode", str(tmp_path / "model.pt"), str(train),
                             str(out), "--greedy"], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and f"'{utt}'" in result.stderr and str(ark) in result.stderr
    assert not out.exists()


def test_compute_feats_says_where_the_skipped_utterances_are_listed(prepared):
    train, _ = prepared
    data = read_data_dir(train)
    corrupt(data.wav_scp[data.utterances[0]])
    result = subprocess.run([sys.executable, "-m", "metarecipe", "compute-feats", str(train), "--nj", "1"],
                            capture_output=True, text=True, check=True)
    listed = train / "feats_skipped.tsv"
    assert f"1 skipped (listed in {listed})" in result.stdout and listed.read_text().count("\n") == 1
