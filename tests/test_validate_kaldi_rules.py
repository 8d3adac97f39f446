"""validate-data-dir against Kaldi's rules: a table of data directories, each valid or invalid as
utils/validate_data_dir.sh (--no-feats, plus the feature tables when present) and utils/validate_text.pl
document it, with metarecipe's extensions (speaker prefixes, feats_skipped.tsv). Every case goes through
read_data_dir and, in one process, through `metarecipe validate-data-dir`."""

import subprocess
import sys

import pytest

from metarecipe.data import DataDir, DataDirError, read_data_dir, write_data_dir
from metarecipe.data.corpora import DataPrepError, get_corpus
from metarecipe.data.datadir import read_foreign_data_dir, utterances_with_features
from metarecipe.io.kaldi_tables import read_table

WAV = "spkA-u1 /c/a1.wav\nspkA-u2 /c/a2.wav\nspkB-u1 /c/b1.wav\n"
TEXT = "spkA-u1 hallo welt\nspkA-u2 guten tag\nspkB-u1 tschüss\n"
UTT2SPK = "spkA-u1 spkA\nspkA-u2 spkA\nspkB-u1 spkB\n"
SPK2UTT = "spkA spkA-u1 spkA-u2\nspkB spkB-u1\n"
BASE = {"wav.scp": WAV, "text": TEXT, "utt2spk": UTT2SPK, "spk2utt": SPK2UTT}
FEATS = {"feats.scp": "spkA-u1 /f/raw.1.ark:10\nspkA-u2 /f/raw.1.ark:900\nspkB-u1 /f/raw.1.ark:2000\n",
         "utt2num_frames": "spkA-u1 98\nspkA-u2 120\nspkB-u1 77\n",
         "cmvn.scp": "spkA /f/cmvn.ark:5\nspkB /f/cmvn.ark:90\n"}
SKIPPED_B = {"feats.scp": "spkA-u1 /f/raw.1.ark:10\nspkA-u2 /f/raw.1.ark:900\n",
             "utt2num_frames": "spkA-u1 98\nspkA-u2 120\n", "cmvn.scp": "spkA /f/cmvn.ark:5\n",
             "feats_skipped.tsv": "spkB-u1\tunreadable audio: /c/b1.wav: not an audio file\n"}
SEGMENTED = {"wav.scp": "recA /c/a.wav\nrecB /c/b.flac\n",
             "segments": "spkA-u1 recA 0.00 1.50\nspkA-u2 recA 1.50 3.25\nspkB-u1 recB 0 2.5\n"}
ODD_SPEAKERS = {"wav.scp": "a+b-1 /c/1.wav\na-1 /c/2.wav\n", "text": "a+b-1 eins\na-1 zwei\n",
                "utt2spk": "a+b-1 a+b\na-1 a\n", "spk2utt": "a a-1\na+b a+b-1\n"}


def case(name, changes, valid, message=""):
    files = {**BASE, **changes}
    return pytest.param({k: v for k, v in files.items() if v is not None}, valid, message, id=name)


CASES = [
    case("minimal", {}, True),
    case("utt2dur-utt2lang", {"utt2dur": "spkA-u1 1.5\nspkA-u2 2\nspkB-u1 0.75\n",
                              "utt2lang": "spkA-u1 de\nspkA-u2 de\nspkB-u1 de\n"}, True),
    case("segments", SEGMENTED, True),
    case("non-ascii-utf8", {"text": "spkA-u1 你好 世界\nspkA-u2 ça va — très bien\nspkB-u1 می\u200cخواهم\n"}, True),
    case("tab-separated", {"utt2spk": "spkA-u1\tspkA\nspkA-u2\tspkA\nspkB-u1\tspkB\n",
                           "text": "spkA-u1\thallo\twelt\nspkA-u2 guten tag\nspkB-u1 tschüss\n"}, True),
    case("pipe-wav", {"wav.scp": "spkA-u1 sox /c/a1.flac -t wav - |\nspkA-u2 /c/a2.wav\nspkB-u1 /c/b1.wav\n"}, True),
    case("feats-cmvn", FEATS, True),
    case("feats-skipped-listed", SKIPPED_B, True),
    # file format: lines are split on "\n" only and must be whole
    case("no-final-newline", {"text": TEXT.rstrip("\n")}, False, "text:3: the last line does not end in a newline"),
    case("cr-in-text", {"text": TEXT.replace("hallo welt", "hallo\rwelt")}, False, "text:1: holds a carriage return"),
    case("crlf-utt2spk", {"utt2spk": UTT2SPK.replace("\n", "\r\n")}, False, "utt2spk:1: holds a carriage return"),
    case("form-feed-text", {"text": TEXT.replace("guten tag", "guten\x0ctag")}, False,
         "text:2: holds U+000C (a control character)"),
    case("u2028-text", {"text": TEXT.replace("guten tag", "guten\u2028spkA-u3 tag")}, False,
         "text:2: holds U+2028 (LINE SEPARATOR)"),
    case("u2029-text", {"text": TEXT.replace("guten tag", "guten\u2029tag")}, False, "text:2: holds U+2029"),
    case("nel-text", {"text": TEXT.replace("guten tag", "guten\x85tag")}, False, "text:2: holds U+0085"),
    case("vertical-tab-text", {"text": TEXT.replace("hallo welt", "hallo\x0bwelt")}, False, "text:1: holds U+000B"),
    case("file-separator-text", {"text": TEXT.replace("hallo welt", "hallo\x1cwelt")}, False, "text:1: holds U+001C"),
    case("nul-wav", {"wav.scp": WAV.replace("/c/a2.wav", "/c/a2\x00.wav")}, False, "wav.scp:2: holds U+0000"),
    case("byte-order-mark", {"text": "\ufeff" + TEXT}, False, "text:1: holds U+FEFF (BYTE ORDER MARK)"),
    case("non-utf8-text", {"text": TEXT.encode().replace("tschüss".encode(), b"tsch\xfcss")}, False,
         "text:3: not UTF-8"),
    case("empty-line", {"text": TEXT.replace("\nspkA-u2", "\n\nspkA-u2")}, False, "text:2: empty line"),
    case("leading-space", {"utt2spk": " " + UTT2SPK}, False, "utt2spk:1: starts with whitespace"),
    case("utt2spk-3-fields", {"utt2spk": UTT2SPK.replace("spkA-u2 spkA", "spkA-u2 spkA x")}, False,
         "utt2spk:2: 3 fields, utt2spk lines have 2"),
    case("utterance-id-with-tab", {"utt2spk": UTT2SPK.replace("spkA-u2 spkA", "spkA-u\t2 spkA")}, False,
         "utt2spk:2: 3 fields"),
    case("no-break-space-in-key", {"utt2spk": UTT2SPK.replace("spkA-u2", "spkA-u\u00a02"),
                                   "text": TEXT.replace("spkA-u2", "spkA-u\u00a02"),
                                   "wav.scp": WAV.replace("spkA-u2", "spkA-u\u00a02"),
                                   "spk2utt": SPK2UTT.replace("spkA-u2", "spkA-u\u00a02")}, False,
         "utt2spk:2: utterance id 'spkA-u\\xa02' holds U+00A0 (NO-BREAK SPACE), whitespace"),
    case("no-break-space-in-text", {"text": TEXT.replace("guten tag", "guten\u00a0tag")}, False,
         "text:2: utterance 'spkA-u2' has a transcript that holds U+00A0 (NO-BREAK SPACE), whitespace other than"),
    case("ideographic-space-in-text", {"text": TEXT.replace("guten tag", "guten\u3000tag")}, False,
         "holds U+3000 (IDEOGRAPHIC SPACE)"),
    case("reserved-word", {"text": TEXT.replace("guten tag", "guten <s> tag")}, False, "'<s>' in its transcript"),
    case("empty-transcript", {"text": TEXT.replace("spkA-u2 guten tag", "spkA-u2")}, False,
         "text:2: utterance 'spkA-u2' has an empty transcript"),
    # spk2utt and the order of keys
    case("missing-spk2utt", {"spk2utt": None}, False, "spk2utt: missing"),
    case("mismatched-spk2utt", {"spk2utt": "spkA spkA-u1\nspkB spkB-u1\n"}, False,
         "spk2utt: does not match utt2spk (regenerate it from utt2spk): speaker 'spkA' on line 1"),
    case("spk2utt-order", {"spk2utt": "spkA spkA-u2 spkA-u1\nspkB spkB-u1\n"}, False, "spk2utt: does not match"),
    case("unsorted", {"utt2spk": "spkA-u2 spkA\nspkA-u1 spkA\nspkB-u1 spkB\n"}, False,
         "utt2spk:2: 'spkA-u1' is out of order"),
    case("duplicate-key", {"text": TEXT.replace("spkA-u2 guten tag\n", "spkA-u2 guten tag\nspkA-u2 tag\n")}, False,
         "text:3: duplicate key 'spkA-u2' (first on line 2)"),
    case("not-sorted-by-speaker", ODD_SPEAKERS, False, "utt2spk must be sorted by speaker too"),
    case("speaker-not-prefix", {"utt2spk": UTT2SPK.replace("spkB-u1 spkB", "spkB-u1 spkX"),
                                "spk2utt": "spkA spkA-u1 spkA-u2\nspkX spkB-u1\n"}, False,
         "speaker 'spkX' is not a prefix of utterance 'spkB-u1'"),
    # the same utterances in every table
    case("empty-files", dict.fromkeys(BASE, ""), False, "no utterances (the data directory is empty)"),
    case("text-lacks-utterance", {"text": "spkA-u1 hallo\nspkB-u1 drei\n"}, False,
         "text: lacks 1 utterance(s) of utt2spk, e.g. 'spkA-u2'"),
    case("wav-lacks-utterance", {"wav.scp": "spkA-u1 /a.wav\nspkB-u1 /b.wav\n"}, False, "wav.scp: lacks 1 utterance"),
    case("utt2lang-lacks-utterance", {"utt2lang": "spkA-u1 de\nspkB-u1 de\n"}, False, "utt2lang: lacks 1 utterance"),
    case("empty-utt2lang", {"utt2lang": ""}, False, "utt2lang: empty"),
    case("wav-tilde", {"wav.scp": WAV.replace("/c/a1.wav", "~/a1.wav")}, False,
         "wav.scp:1: recording 'spkA-u1' has a wav.scp entry that starts with '~'"),
    # durations and segments
    case("utt2dur-not-a-number", {"utt2dur": "spkA-u1 1.5\nspkA-u2 abc\nspkB-u1 1\n"}, False,
         "utt2dur:2: 'spkA-u2' has 'abc' where a number belongs"),
    case("utt2dur-nan", {"utt2dur": "spkA-u1 1.5\nspkA-u2 nan\nspkB-u1 1\n"}, False, "'nan' where a number"),
    case("utt2dur-zero", {"utt2dur": "spkA-u1 1.5\nspkA-u2 0\nspkB-u1 1\n"}, False,
         "utt2dur:2: utterance 'spkA-u2' has duration 0.0"),
    case("segments-end-minus-1", {**SEGMENTED, "segments": SEGMENTED["segments"].replace("0 2.5", "0 -1")}, False,
         "segments:3: utterance 'spkB-u1' spans [0.0, -1.0]"),
    case("segments-end-before-start", {**SEGMENTED, "segments": SEGMENTED["segments"].replace("1.50 3.25", "1.50 1.0")},
         False, "segments:2: utterance 'spkA-u2' spans [1.5, 1.0]"),
    case("segments-end-equals-start", {**SEGMENTED, "segments": SEGMENTED["segments"].replace("0 2.5", "2.5 2.5")},
         False, "spans [2.5, 2.5]"),
    case("segments-3-fields", {**SEGMENTED, "segments": SEGMENTED["segments"].replace(" 3.25", "")}, False,
         "segments:2: 3 fields, segments lines have 4"),
    case("segments-unknown-recording", {**SEGMENTED, "segments": SEGMENTED["segments"].replace("recB", "recC")},
         False, "refers to recording 'recC' not in wav.scp"),
    case("segments-extra-recording", {**SEGMENTED, "wav.scp": SEGMENTED["wav.scp"] + "recC /c/c.wav\n"}, False,
         "wav.scp:3: 'recC' is not a recording that segments refers to"),
    # feature tables, with feats_skipped.tsv
    case("feats-lacks-utterance", {**FEATS, "feats.scp": FEATS["feats.scp"].replace("spkA-u2 /f/raw.1.ark:900\n", ""),
                                   "utt2num_frames": "spkA-u1 98\nspkB-u1 77\n"}, False,
         "feats.scp: lacks 1 utterance(s) that feats_skipped.tsv does not list either, e.g. 'spkA-u2'"),
    case("feats-skipped-has-features", {**FEATS, "feats_skipped.tsv": "spkB-u1\tunreadable\n"}, False,
         "feats_skipped.tsv:1: lists 'spkB-u1', which has an entry in"),
    case("feats-skipped-unknown", {**SKIPPED_B, "feats_skipped.tsv": SKIPPED_B["feats_skipped.tsv"] + "spkC-u9\tx\n"},
         False, "feats_skipped.tsv:2: 'spkC-u9' is not an utterance of utt2spk"),
    case("feats-all-skipped", {"feats.scp": "", "utt2num_frames": "",
                               "feats_skipped.tsv": "spkA-u1\tx\nspkA-u2\tx\nspkB-u1\tx\n"}, False,
         "feats.scp: no utterance has features"),
    case("utt2num-frames-lacks", {**FEATS, "utt2num_frames": "spkA-u1 98\nspkB-u1 77\n"}, False,
         "utt2num_frames: lacks 1 utterance(s)"),
    case("utt2num-frames-not-integer", {**FEATS, "utt2num_frames": "spkA-u1 98\nspkA-u2 1.5\nspkB-u1 77\n"}, False,
         "utt2num_frames:2: 'spkA-u2' has '1.5' frames, not a positive integer"),
    case("cmvn-not-speakers", {**FEATS, "cmvn.scp": "spkA /f/cmvn.ark:5\nspkC /f/cmvn.ark:90\n"}, False,
         "cmvn.scp:2: 'spkC' is not a speaker of spk2utt"),
    case("cmvn-of-skipped-speaker", {**SKIPPED_B, "cmvn.scp": FEATS["cmvn.scp"]}, False,
         "cmvn.scp:2: 'spkB' is not a speaker of spk2utt (with features)"),
]


def write_case(directory, files):
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return directory


@pytest.mark.parametrize("files, valid, message", CASES)
def test_read_data_dir_follows_kaldi_rules(tmp_path, files, valid, message):
    directory = write_case(tmp_path / "d", files)
    if valid:
        read_data_dir(directory)
        return
    with pytest.raises(DataDirError) as err:
        read_data_dir(directory)
    assert message in str(err.value)


def test_the_table_is_large_enough_and_has_both_kinds():
    assert len(CASES) >= 34
    assert sum(c.values[1] for c in CASES) >= 8 and sum(not c.values[1] for c in CASES) >= 26


def failure_blocks(stderr: str) -> dict[str, str]:
    """{directory: its problems} from validate-data-dir's stderr ("DIR: FAILED" then indented lines)."""
    blocks, current = {}, None
    for line in stderr.splitlines():
        if line.endswith(": FAILED") and not line.startswith("  "):
            current = line.removesuffix(": FAILED")
            blocks[current] = ""
        elif current is not None:
            blocks[current] += line + "\n"
    return blocks


def test_cli_agrees_with_the_table(tmp_path):
    dirs = {c.id: write_case(tmp_path / c.id, c.values[0]) for c in CASES}
    result = subprocess.run([sys.executable, "-m", "metarecipe", "validate-data-dir", *map(str, dirs.values())],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    failed = failure_blocks(result.stderr)
    for c in CASES:
        _, valid, message = c.values
        directory = str(dirs[c.id])
        if valid:
            assert f"{directory}: OK (" in result.stdout and directory not in failed, c.id
        else:
            assert directory in failed and message in failed[directory], (c.id, failed.get(directory))
            assert f"{directory}: OK" not in result.stdout


def test_cli_passes_valid_directories_and_summarises_features(tmp_path):
    valid = [c for c in CASES if c.values[1]]
    dirs = [write_case(tmp_path / c.id, c.values[0]) for c in valid]
    result = subprocess.run([sys.executable, "-m", "metarecipe", "validate-data-dir", *map(str, dirs)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.count(": OK (") == len(valid)
    assert f"{tmp_path / 'feats-skipped-listed'}: OK (3 utterances, 2 speakers, features for 2, 1 in " \
           "feats_skipped.tsv)" in result.stdout


def test_utterances_with_features_names_the_skipped_ones(tmp_path):
    directory = write_case(tmp_path / "d", {**BASE, **SKIPPED_B})
    assert utterances_with_features(directory) == (["spkA-u1", "spkA-u2"],
                                                   {"spkB-u1": "unreadable audio: /c/b1.wav: not an audio file"})
    no_feats = write_case(tmp_path / "n", BASE)
    with pytest.raises(DataDirError, match="feats.scp: missing; run `metarecipe compute-feats"):
        utterances_with_features(no_feats)
    broken = write_case(tmp_path / "b", {**BASE, **SKIPPED_B, "feats_skipped.tsv": ""})
    with pytest.raises(DataDirError, match="feats.scp: lacks 1 utterance"):
        utterances_with_features(broken)


def test_lenient_reading_splits_lines_on_newline_only(tmp_path):
    text = TEXT.replace("guten tag", "guten\u2028spkA-u9 phantom\x0ctag")
    directory = write_case(tmp_path / "d", {**BASE, "text": text})
    data, rejected = read_foreign_data_dir(directory)
    assert sorted(data.text) == ["spkA-u1", "spkB-u1"]  # no phantom utterance, and no cut-short transcript
    assert rejected == {"spkA-u2": f"{directory / 'text'}:2: holds U+2028 (LINE SEPARATOR), a control or "
                                   "line-separator character"}
    assert read_data_dir(directory, validate=False).text == data.text
    (tmp_path / "t.scp").write_text("a x\u2028b y\nc z\n", encoding="utf-8")
    assert read_table(tmp_path / "t.scp") == {"a": "x\u2028b y", "c": "z"}


def test_client_id_with_a_space_is_refused_before_anything_is_written(tmp_path):
    client = "3f2a e9"  # a Common Voice client_id with a space, as a corpus could hold
    utt = f"{client}-common_voice_de_1"
    data = DataDir({utt: "/c/1.mp3"}, {utt: "hallo"}, {utt: client}, {utt: 1.0}, {utt: "de"})
    with pytest.raises(DataDirError, match="utterance id '3f2a e9-common_voice_de_1' holds U\\+0020 \\(SPACE\\)"):
        write_data_dir(data, tmp_path / "out" / "train")
    assert not (tmp_path / "out").exists()


def metarecipe(*args):
    return subprocess.run([sys.executable, "-m", "metarecipe", *map(str, args)], capture_output=True, text=True)


def test_kaldi_import_renames_non_prefix_speakers_and_drops_broken_transcripts(tmp_path):
    source = write_case(tmp_path / "src", {
        "wav.scp": "u1 /c/1.wav\nu2 /c/2.wav\nspkB-u3 /c/3.wav\n",
        "text": "u1 hallo welt\nu2 zwei\u2028u9 phantom zeile\nspkB-u3 drei\n",
        "utt2spk": "u1 spkA\nu2 spkA\nspkB-u3 spkB\n",
    })
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    result = metarecipe("prepare-data", "kaldi", source, tmp_path / "out", "--opt", "lang=de")
    assert result.returncode == 0, result.stderr
    target = tmp_path / "out" / "src"
    assert (target / "text").read_text(encoding="utf-8") == "spkA-u1 hallo welt\nspkB-u3 drei\n"
    assert (target / "wav.scp").read_text() == "spkA-u1 /c/1.wav\nspkB-u3 /c/3.wav\n"
    assert (target / "renamed.tsv").read_text() == "u1\tspkA-u1\n"
    assert (target / "skipped.tsv").read_text(encoding="utf-8") == \
        f"u2\t{source / 'text'}:2: holds U+2028 (LINE SEPARATOR), a control or line-separator character\n"
    assert read_data_dir(target).utt2lang == {"spkA-u1": "de", "spkB-u3": "de"}
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before


def test_kaldi_import_with_nothing_usable_writes_nothing(tmp_path):
    source = write_case(tmp_path / "src", {"wav.scp": "u1 /c/1.wav\r\n", "text": "u1 hallo\r\n",
                                           "utt2spk": "u1 spkA\r\n"})
    result = metarecipe("prepare-data", "kaldi", source, tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "no usable utterance" in result.stderr
    assert "holds a carriage return" in result.stderr
    assert not (tmp_path / "out").exists()


def test_kaldi_import_of_a_segmented_unsorted_directory(tmp_path):
    source = write_case(tmp_path / "src", {
        "wav.scp": "recB /c/b.wav\nrecA /c/a.wav\n",
        "segments": "s1 recA 0 1.5\ns2 recA 1.5 -1\nspkB-s3 recB 0.0 2.0\n",
        "text": "spkB-s3 drei\ns1 eins\ns2 zwei\ns1 doppelt\n",
        "utt2spk": "s1 spkA\ns2 spkA\nspkB-s3 spkB\n",
    })
    prepare = get_corpus("kaldi")
    with pytest.raises(DataPrepError, match="is the source directory itself"):
        prepare(source, tmp_path, name="src")
    written = prepare(source, tmp_path / "out")["src"]
    data = read_data_dir(written)
    assert data.utterances == ["spkA-s1", "spkB-s3"] and data.text["spkA-s1"] == "eins"
    assert {u: s.recording for u, s in data.segments.items()} == {"spkA-s1": "recA", "spkB-s3": "recB"}
    assert (written / "renamed.tsv").read_text() == "s1\tspkA-s1\n"  # s2 is renamed, then left out
    assert "s2\tutterance 'spkA-s2' spans [1.5, -1.0]" in (written / "skipped.tsv").read_text()
