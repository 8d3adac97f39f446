"""Corpus metadata comes from strangers: a path in it is a file inside the corpus, never a command, and bad
input is a one-line message on stderr that leaves nothing behind. Real files, real `metarecipe` processes."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from test_commonvoice import COLUMNS, make_release, row

from metarecipe.data import DataDir, read_data_dir, write_data_dir
from metarecipe.data.corpora import corpus_file

PIPE = "starts or ends with '|' (a wav.scp pipe command)"
FOLDER_TSV = Path(__file__).resolve().parent.parent / "recipes" / "TEMPLATE" / "local" / "folder_tsv.py"


def metarecipe(*args, cwd):
    return subprocess.run([sys.executable, "-m", "metarecipe", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def skipped_reasons(data_dir):
    return dict(line.split("\t", 1) for line in (data_dir / "skipped.tsv").read_text(encoding="utf-8").splitlines())


def plant(path: Path, audio: bytes) -> str:
    """A real audio file at `path` (parents made); returns its name relative to the folder it was planted in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(audio)
    return path.name


def test_common_voice_paths_never_run_a_command_or_leave_the_clips_directory(tmp_path):
    root = make_release(tmp_path / "cv", "cv-21.0")
    clips = root / "de" / "clips"
    audio = (clips / "common_voice_de_train00.mp3").read_bytes()
    piped = "x.mp3; touch PWNED |"  # a file of this exact name exists under clips/
    nested = "evil; touch PWNED2; cat cv/de/clips/common_voice_de_train00.mp3 |"  # directories, and it writes audio
    for name in (piped, nested, "sub/dir/nested.mp3"):
        plant(clips / name, audio)
    plant(root / "de" / "outside.mp3", audio)
    (clips / "link.mp3").symlink_to(root / "de" / "outside.mp3")
    columns = COLUMNS["cv-21.0"]
    with open(root / "de" / "train.tsv", "a") as train:
        for client, path in (("ee55", piped), ("ff66", nested), ("gg77", "../outside.mp3"),
                             ("hh88", str(root / "de" / "outside.mp3")), ("ii99", "link.mp3"),
                             ("jj00", "sub/dir/nested.mp3")):
            train.write(row(columns, client, path, "Ein Satz.") + "\n")

    prepared = metarecipe("prepare-data", "commonvoice", root, tmp_path / "data", "--splits", "train", cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()
    train = tmp_path / "data" / "de" / "train"
    skipped = skipped_reasons(train)
    assert skipped["ee55-x"] == f"path {piped!r} {PIPE}"
    assert skipped["ff66-common_voice_de_train00"] == f"path {nested!r} {PIPE}"
    assert skipped["gg77-outside"].startswith(f"path '../outside.mp3' leads outside the corpus directory {clips}")
    assert skipped["hh88-outside"].endswith("is absolute (a corpus names its files relative to itself)")
    assert skipped["ii99-link"].startswith("path 'link.mp3' leads outside the corpus directory")
    wav_scp = (train / "wav.scp").read_text()
    assert "|" not in wav_scp and f"jj00-nested {clips}/sub/dir/nested.mp3\n" in wav_scp
    assert len(read_data_dir(train).utterances) == 5

    feats = metarecipe("compute-feats", train, cwd=tmp_path)
    assert feats.returncode == 0, feats.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()


def make_folder_corpus(corpus: Path, rows: list[tuple[str, str]]) -> None:
    """A folder_tsv corpus: audio/a.wav and audio/b.wav spoken by anna and bert, then `rows` (path, speaker)."""
    (corpus / "audio").mkdir(parents=True)
    for i, name in enumerate(("a", "b")):
        soundfile.write(corpus / "audio" / f"{name}.wav", 0.3 * np.sin(np.arange(9600) * (0.05 + 0.01 * i)), 16000)
    lines = ["path\tsentence\tspeaker\tlanguage\tsplit", "audio/a.wav\tHallo Welt!\tanna\tde\ttrain",
             "audio/b.wav\tTschüss.\tbert\tde\ttrain"]
    lines += [f"{path}\tEin Satz.\t{speaker}\tde\ttrain" for path, speaker in rows]
    (corpus / "transcripts.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_the_template_plug_in_never_runs_a_command_from_its_table(tmp_path):
    corpus = tmp_path / "corpus"
    piped = "audio/x.wav; touch PWNED |"  # a file of this exact name exists
    nested = "audio/y; touch PWNED2; cat corpus/audio/a.wav |"  # directories, and it writes audio
    make_folder_corpus(corpus, [(piped, "carl"), (nested, "dora"), ("../outside.wav", "emil"),
                                (str(tmp_path / "outside.wav"), "fred"), ("audio/a.wav", "gu sti")])
    wav = (corpus / "audio" / "a.wav").read_bytes()
    for path in (corpus / piped, corpus / nested, tmp_path / "outside.wav"):
        plant(path, wav)

    prepared = metarecipe("prepare-data", FOLDER_TSV, corpus, tmp_path / "data", cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()
    train = tmp_path / "data" / "de" / "train"
    skipped = skipped_reasons(train)
    assert skipped["transcripts.tsv:4"] == f"path {piped!r} {PIPE}"
    assert skipped["transcripts.tsv:5"] == f"path {nested!r} {PIPE}"
    assert skipped["transcripts.tsv:6"].startswith("path '../outside.wav' leads outside the corpus directory")
    assert skipped["transcripts.tsv:7"].endswith("is absolute (a corpus names its files relative to itself)")
    assert skipped["transcripts.tsv:8"] == ("speaker or file name cannot make utterance id 'gu sti-a': it holds "
                                            "U+0020 (SPACE), whitespace")
    assert read_data_dir(train).utterances == ["anna-a", "bert-b"]

    feats = metarecipe("compute-feats", train, cwd=tmp_path)
    assert feats.returncode == 0, feats.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()


def test_the_template_plug_in_refuses_a_language_that_would_leave_the_output_directory(tmp_path):
    corpus = tmp_path / "corpus"
    make_folder_corpus(corpus, [])
    table = corpus / "transcripts.tsv"
    table.write_text(table.read_text().replace("\tde\ttrain", "\t../../escaped\ttrain", 1))
    result = metarecipe("prepare-data", FOLDER_TSV, corpus, tmp_path / "out" / "data", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == (f"metarecipe prepare-data: {table}:2: language '../../escaped' is not a language "
                             "code\n")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out").exists()


def test_a_pipe_command_written_into_wav_scp_by_hand_still_runs(tmp_path):
    wave = 0.3 * np.sin(np.arange(16000) * 0.07)
    soundfile.write(tmp_path / "a.wav", wave, 16000)
    data = tmp_path / "data"
    write_data_dir(DataDir({"spk-a": f"cat {tmp_path / 'a.wav'} |"}, {"spk-a": "hallo"}, {"spk-a": "spk"}), data)
    result = metarecipe("compute-feats", data, "--nj", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (data / "feats.scp").read_text().startswith("spk-a ")


@pytest.mark.parametrize("name, reason", [
    ("a.wav", None),
    ("sub/dir/b.wav", None),
    ("sub/../a.wav", None),
    ("inside.wav", None),  # a symlink to a file inside the corpus
    ("../out.wav", "leads outside the corpus directory"),
    ("sub/../../out.wav", "leads outside the corpus directory"),
    ("outside.wav", "leads outside the corpus directory"),  # a symlink to a file outside
    ("loop.wav", "cannot be used"),
    ("/etc/passwd", "is absolute"),
    ("a.wav |", "starts or ends with '|'"),
    ("| a.wav", "starts or ends with '|'"),
    (" a.wav", "starts or ends with whitespace"),
    ("a.wav\u00a0", "starts or ends with whitespace"),
    ("a\nb.wav", "a control or line-separator character"),
    ("a\u2028b.wav", "a control or line-separator character"),
    ("\ufeffa.wav", "a control or line-separator character"),
    ("a\tb.wav", "holds a tab"),
    ("a\x00b.wav", "a control or line-separator character"),
    ("-", "is '-'"),
    ("", "is empty"),
    ("a.ark:123", "ends in ':<digits>'"),
    ("x" * 300 + ".wav", "cannot be used"),
])
def test_corpus_file_keeps_metadata_paths_to_files_inside_the_corpus(tmp_path, name, reason):
    corpus = tmp_path / "corpus"
    plant(corpus / "sub" / "dir" / "b.wav", b"RIFF")
    plant(corpus / "a.wav", b"RIFF")
    plant(tmp_path / "out.wav", b"RIFF")
    (corpus / "inside.wav").symlink_to(corpus / "a.wav")
    (corpus / "outside.wav").symlink_to(tmp_path / "out.wav")
    (corpus / "loop.wav").symlink_to(corpus / "loop.wav")
    found = corpus_file(corpus, name)
    if reason is None:
        assert found == (corpus / name).resolve() and found.is_file()
    else:
        assert isinstance(found, str) and found.startswith(f"path {name!r} ") and reason in found


def test_prepare_data_errors_are_one_line_on_stderr_and_write_nothing(tmp_path):
    root = make_release(tmp_path / "cv", "cv-21.0")
    out = tmp_path / "data"
    cases = [
        (["commonvoice", root, out, "--opt", "nope=1"],
         "corpus plug-in 'commonvoice' does not take these options: got an unexpected keyword argument 'nope'"),
        (["commonvoice", root, out, "--opt", "novalue"], "--opt wants KEY=VALUE, got 'novalue'"),
        (["nope", root, out], "no corpus plug-in 'nope'; installed: asterisk, commonvoice, demo, kaldi"),
        (["kaldi", root, out, "--langs", "de"], "corpus plug-in 'kaldi' does not take these options"),
        (["demo", root, out, "--opt", "minutes=ten"], "demo corpus: minutes must be a number and seed an integer"),
    ]
    for args, message in cases:
        result = metarecipe("prepare-data", *args, cwd=tmp_path)
        assert result.returncode == 1 and result.stdout == "", (args, result.stdout)
        assert result.stderr.startswith(f"metarecipe prepare-data: {message}") and result.stderr.count("\n") == 1
        assert not out.exists()


def test_a_release_whose_last_split_has_nothing_usable_leaves_no_directory(tmp_path):
    root = make_release(tmp_path / "cv", "cv-21.0")
    (root / "de" / "test.tsv").write_text("\t".join(COLUMNS["cv-21.0"]) + "\n" +
                                          row(COLUMNS["cv-21.0"], "dd44", "missing.mp3", "Fehlt.") + "\n")
    result = metarecipe("prepare-data", "commonvoice", root, tmp_path / "data", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == (f"metarecipe prepare-data: {root / 'de' / 'test.tsv'}: no usable utterance (1 skipped: "
                             f"missing clip {root / 'de' / 'clips' / 'missing.mp3'})\n")
    assert not (tmp_path / "data").exists()
    assert sorted(os.listdir(tmp_path)) == ["cv"]
