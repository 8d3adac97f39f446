"""Kaldi data directories: round trip, every invariant checked with file and line, fix, subset, combine."""

import pytest

from metarecipe.data import (
    DataDir,
    DataDirError,
    Segment,
    combine_data_dirs,
    fix_data_dir,
    read_data_dir,
    subset_data_dir,
    validate_data_dir,
    write_data_dir,
)


def small_dir(prefix="spkA"):
    utts = [f"{prefix}-u2", f"{prefix}-u1", f"{prefix}x-u3"]
    return DataDir(
        wav_scp={u: f"/corpus/{u}.flac" for u in utts},
        text={utts[0]: "zwei  wörter", utts[1]: "l'eau est là", utts[2]: "drei"},
        utt2spk={utts[0]: prefix, utts[1]: prefix, utts[2]: prefix + "x"},
        utt2dur={utts[0]: 1.5, utts[1]: 2.25, utts[2]: 0.75},
        utt2lang={u: "de" for u in utts},
    )


def test_written_directory_reads_back_sorted_with_spk2utt(tmp_path):
    data = small_dir()
    write_data_dir(data, tmp_path / "d")
    lines = (tmp_path / "d" / "text").read_text(encoding="utf-8").splitlines()
    assert [line.split()[0] for line in lines] == ["spkA-u1", "spkA-u2", "spkAx-u3"]
    assert (tmp_path / "d" / "spk2utt").read_text().splitlines() == ["spkA spkA-u1 spkA-u2", "spkAx spkAx-u3"]
    again = read_data_dir(tmp_path / "d")
    assert again.text == data.text and again.utt2spk == data.utt2spk and again.utt2lang == data.utt2lang
    assert again.utt2dur == data.utt2dur and again.wav_scp == data.wav_scp
    assert not list((tmp_path / "d").glob(".*.tmp"))


def write(dir_, name, content):
    (dir_ / name).write_bytes(content.encode("utf-8") if isinstance(content, str) else content)


@pytest.mark.parametrize("name, content, message", [
    ("text", "spkA-u2 b\nspkA-u1 a\nspkAx-u3 c\n", "text:2: 'spkA-u1' is out of order"),
    ("text", "spkA-u1 a\nspkA-u1 b\nspkA-u2 b\nspkAx-u3 c\n", "text:2: duplicate key 'spkA-u1'"),
    ("text", "spkA-u1 a\nspkA-u2\nspkAx-u3 c\n", "utterance 'spkA-u2' has an empty transcript"),
    ("text", b"spkA-u1 a\nspkA-u2 \xe9t\xe9\nspkAx-u3 c\n", "text:2: not UTF-8"),
    ("utt2spk", "spkA-u1 spkA\nspkA-u2 spkB\nspkAx-u3 spkAx\n", "speaker 'spkB' is not a prefix of utterance"),
    ("utt2dur", "spkA-u1 1.0\nspkA-u2 abc\nspkAx-u3 1\n", "'spkA-u2' has 'abc' where a number belongs"),
    ("utt2lang", "spkA-u1 de\nspkAx-u3 de\n", "utt2lang: lacks 1 utterance(s) of utt2spk, e.g. 'spkA-u2'"),
    ("spk2utt", "spkA spkA-u1\nspkAx spkAx-u3\n", "spk2utt: does not match utt2spk"),
    ("wav.scp", "spkA-u1 a.wav\nspkA-u2\nspkAx-u3 c.wav\n", "wav.scp:2: 'spkA-u2' has no value"),
])
def test_broken_invariants_are_reported_with_file_and_line(tmp_path, name, content, message):
    write_data_dir(small_dir(), tmp_path)
    write(tmp_path, name, content)
    with pytest.raises(DataDirError) as err:
        read_data_dir(tmp_path)
    assert message in str(err.value)


def test_missing_required_file_is_named(tmp_path):
    write_data_dir(small_dir(), tmp_path)
    (tmp_path / "utt2spk").unlink()
    with pytest.raises(DataDirError, match="utt2spk: missing"):
        read_data_dir(tmp_path)


def test_fix_keeps_complete_utterances_and_gives_reasons():
    data = small_dir()
    data.text["spkA-u9"] = "orphan"
    data.text["spkA-u1"] = "   "
    del data.utt2dur["spkA-u2"]
    fixed, dropped = fix_data_dir(data)
    assert fixed.utterances == ["spkAx-u3"]
    assert dropped == {"spkA-u1": "empty transcript", "spkA-u2": "missing from utt2dur",
                       "spkA-u9": "missing from utt2spk, utt2dur, utt2lang"}
    assert set(fixed.wav_scp) == {"spkAx-u3"}


def test_subset_and_combine_keep_tables_consistent(tmp_path):
    a, b = small_dir("spkA"), small_dir("spkB")
    both = combine_data_dirs([a, b])
    assert len(both.utterances) == 6
    part = subset_data_dir(both, ["spkB-u1", "spkA-u2"])
    assert part.utterances == ["spkA-u2", "spkB-u1"] and set(part.wav_scp) == set(part.utterances)
    write_data_dir(part, tmp_path)
    assert read_data_dir(tmp_path).utt2dur == {"spkA-u2": 1.5, "spkB-u1": 2.25}
    with pytest.raises(DataDirError, match="repeats 3 utterance id"):
        combine_data_dirs([a, small_dir("spkA")])
    with pytest.raises(KeyError, match="nope"):
        subset_data_dir(both, ["nope"])


def test_segments_refer_to_recordings(tmp_path):
    data = DataDir(wav_scp={"rec1": "sox long.flac -t wav - |"},
                   text={"s1-a": "eins", "s1-b": "zwei"}, utt2spk={"s1-a": "s1", "s1-b": "s1"},
                   segments={"s1-a": Segment("rec1", 0.0, 1.2), "s1-b": Segment("rec1", 1.2, 2.5)})
    write_data_dir(data, tmp_path)
    assert read_data_dir(tmp_path).segments["s1-b"].end == 2.5
    data.segments["s1-b"].end = -1  # "to the end of the recording": validate_data_dir.sh refuses it
    assert "'s1-b' spans [1.2, -1]" in " ".join(validate_data_dir(data))
    write(tmp_path, "segments", "s1-a rec1 0.0 1.2\ns1-b rec2 1.5 1.0\n")
    with pytest.raises(DataDirError) as err:
        read_data_dir(tmp_path)
    assert "refers to recording 'rec2' not in wav.scp" in str(err.value)
    assert "'s1-b' spans [1.5, 1.0]" in str(err.value)


def test_fix_drops_what_kaldi_refuses_so_that_the_rest_writes():
    data = small_dir()
    data.text["spkA-u1"] = "l'eau\u00a0est là"  # a no-break space: utils/validate_text.pl refuses it
    data.utt2dur["spkA-u2"] = float("nan")
    fixed, dropped = fix_data_dir(data)
    assert fixed.utterances == ["spkAx-u3"] and validate_data_dir(fixed) == []
    assert "U+00A0 (NO-BREAK SPACE)" in dropped["spkA-u1"] and "duration nan" in dropped["spkA-u2"]


def test_many_broken_lines_are_counted_after_the_first_twenty(tmp_path):
    utts = [f"spk-u{i:03d}" for i in range(60)]
    data = DataDir({u: f"/c/{u}.wav" for u in utts}, {u: "hallo" for u in utts}, {u: "spk" for u in utts})
    write_data_dir(data, tmp_path)
    write(tmp_path, "text", "".join(f"{u} hallo\r\n" for u in utts))
    with pytest.raises(DataDirError) as err:
        read_data_dir(tmp_path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{tmp_path / 'text'}:1: holds a carriage return (CR or CRLF line end)"
    assert f"{tmp_path / 'text'}: 40 more problem(s) like these" in lines and len(lines) < 25
