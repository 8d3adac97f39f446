"""Corpus plug-in skeleton: a folder of audio files with one transcript TSV. Copy it, edit `read_rows`.

Layout it reads (any audio format soundfile reads: wav, flac, mp3, ogg):

    my_corpus/
      transcripts.tsv    path<TAB>sentence<TAB>speaker<TAB>language<TAB>split   (a header line first)
      audio/...          the files named in the path column, relative to my_corpus/

`prepare(corpus_dir, out_dir, langs=None, splits=...)` writes out_dir/<language>/<split> as Kaldi data
directories (wav.scp text utt2spk spk2utt utt2dur utt2lang) and a skipped.tsv per directory naming every row left
out and why. Paths in the table come from whoever made the corpus: corpus_file() keeps them to files inside
the corpus directory that wav.scp holds as file names (never a command), and id_problem() checks the ids.
Use it with the recipe as

    ./run.sh --corpus local/my_corpus.py --corpus-dir /data/my_corpus --source-langs "..." --target-langs "..."
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from metarecipe.data.audio import AudioError, file_duration
from metarecipe.data.corpora import DataPrepError, corpus_file
from metarecipe.data.datadir import DataDir, id_problem, write_data_dir
from metarecipe.text.normalize import Dropped, normalize_or_drop

SPLITS = ("train", "dev", "test")
COLUMNS = ("path", "sentence", "speaker", "language", "split")
MIN_SECONDS = 0.3


def read_rows(corpus_dir: Path) -> list[tuple[str, dict[str, str]]]:
    """(where, row) for every line of the transcript table; edit this for another layout."""
    table = corpus_dir / "transcripts.tsv"
    if not table.is_file():
        raise DataPrepError(f"{table}: missing (expected columns {', '.join(COLUMNS)})")
    with open(table, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataPrepError(f"{table}:1: missing columns {missing}")
        rows = [(f"{table.name}:{number}", row) for number, row in enumerate(reader, start=2)]
    for where, row in rows:
        if None in row or None in row.values():
            raise DataPrepError(f"{corpus_dir / where}: not the {len(reader.fieldnames)} fields of the header")
        if not re.fullmatch(r"[\w-]+", row["language"].strip()):  # it names an output directory
            raise DataPrepError(f"{corpus_dir / where}: language {row['language']!r} is not a language code")
    return rows


def _utterance(corpus_dir: Path, row: dict[str, str]) -> tuple[str, Path, str, float] | str:
    """(utterance id, audio file, normalised text, seconds) or the reason to skip the row. A path from the
    table is a file inside corpus_dir (corpus_file), never a command, and is read as a file only."""
    speaker = row["speaker"].strip()
    utt = f"{speaker}-{Path(row['path']).stem}"
    if problem := id_problem(speaker) or id_problem(utt):
        return f"speaker or file name cannot make utterance id {utt!r}: it {problem}"
    audio = corpus_file(corpus_dir, row["path"])
    if isinstance(audio, str):
        return audio
    text = normalize_or_drop(row["sentence"], row["language"].strip())
    if isinstance(text, Dropped):
        return str(text)
    if not audio.is_file():
        return f"missing audio file {audio}"
    try:
        seconds = file_duration(audio)
    except AudioError as err:
        return f"unreadable audio: {err}"
    if seconds < MIN_SECONDS:
        return f"audio of {seconds:.2f} s is too short"
    return utt, audio, text, seconds


def prepare(corpus_dir, out_dir, langs=None, splits=SPLITS) -> dict[str, Path]:
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    dirs: dict[str, DataDir] = {}
    skipped: dict[str, list[str]] = {}
    for where, row in read_rows(corpus_dir):
        lang, split = row["language"].strip(), row["split"].strip()
        if (langs and lang not in langs) or split not in splits:
            continue
        name = f"{lang}/{split}"
        data = dirs.setdefault(name, DataDir({}, {}, {}))
        found = _utterance(corpus_dir, row)
        if isinstance(found, str):
            skipped.setdefault(name, []).append(f"{where}\t{found}")
            continue
        utt, audio, text, seconds = found
        if utt in data.utt2spk:
            skipped.setdefault(name, []).append(f"{where}\tduplicate utterance {utt}")
            continue
        data.wav_scp[utt] = str(audio)
        data.text[utt], data.utt2spk[utt] = text, row["speaker"].strip()
        data.utt2dur[utt], data.utt2lang[utt] = seconds, lang
    wanted = [f"{lang}/{split}" for lang in langs for split in splits] if langs else sorted(dirs)
    empty = [name for name in wanted if not dirs.get(name, DataDir({}, {}, {})).utt2spk]
    if empty:
        raise DataPrepError(f"{corpus_dir}: no usable utterance for {', '.join(empty)}")
    written = {}
    for name in wanted:
        write_data_dir(dirs[name], out_dir / name)
        (out_dir / name / "skipped.tsv").write_text("".join(f"{line}\n" for line in skipped.get(name, [])),
                                                    encoding="utf-8")
        written[name] = out_dir / name
    return written
