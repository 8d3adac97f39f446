"""Common Voice releases: ``<root>/<lang>/{train,dev,test,validated,invalidated,other}.tsv`` and
``<root>/<lang>/clips/*.mp3``.

The TSV columns changed across releases (older ones lack ``sentence_id``, ``sentence_domain``, ``variant``,
``segment``, and the order differs), so rows are read by header name, with quoting off (sentences contain
quote characters). Only ``client_id``, ``path`` and ``sentence`` are needed. The utterance id is
``<client_id>-<clip stem>`` and the speaker is the client. Transcripts are normalised for the language
(metarecipe.text.normalize: numbers are spelled out in the language).

A clip path is a file name under the release, never a command: one that is absolute, leads outside the
clips directory (``..``, symlinks) or that wav.scp could not hold as that file name (a '|' at an end, control
characters, whitespace at an end) is refused, and clips are read as files only.

Bad rows never stop the preparation: such a path, a client_id or clip name that cannot make a Kaldi id
(whitespace, control characters), a missing, empty, undecodable or too short clip, a transcript empty or
unspeakable after normalisation (digits in a language num2words does not spell, letters of another script,
nothing left), a duplicate row or undecodable bytes are skipped and listed with their reason (and
``<tsv>:<line>`` or the utterance id) in ``skipped.tsv`` beside the data directory, which starts with one
comment line per kind of reason, ``# skipped<TAB><count><TAB><reason>``. It stops with
DataPrepError only when a TSV is missing or lacks a needed column, or when nothing usable is left; then nothing
is written. With ``train_from_validated``, train is validated.tsv minus the speakers of dev and test and their
sentences (compared after normalisation).
"""

from __future__ import annotations

from pathlib import Path

from metarecipe.data.audio import AudioError, file_duration
from metarecipe.data.corpora import DataPrepError, corpus_file, skipped_lines, write_prepared
from metarecipe.data.datadir import DataDir, id_problem
from metarecipe.text.normalize import Dropped, normalize, normalize_or_drop

REQUIRED_COLUMNS = ("client_id", "path", "sentence")
KNOWN_COLUMNS = {"client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes",
                 "age", "gender", "accent", "accents", "variant", "locale", "segment"}
SPLITS = ("train", "dev", "test")
MIN_SECONDS = 0.2


def read_tsv(path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[tuple[str, Dropped]], list[str]]:
    """(rows as (line number, {column: value}), skipped (where, reason), unknown column names)."""
    if not path.is_file():
        raise DataPrepError(f"{path}: missing (is this a Common Voice release directory?)")
    lines = path.read_bytes().split(b"\n")
    try:
        header = lines[0].decode("utf-8").rstrip("\r").split("\t")
    except UnicodeDecodeError:
        raise DataPrepError(f"{path}:1: header is not UTF-8") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataPrepError(f"{path}: no column {', '.join(repr(c) for c in missing)} in header {header}")
    rows, skipped = [], []
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        try:
            fields = raw.decode("utf-8").rstrip("\r").split("\t")
        except UnicodeDecodeError as err:
            skipped.append((f"{path.name}:{number}",
                            Dropped("not UTF-8", f"not UTF-8 ({err.reason} at byte {err.start})")))
            continue
        if len(fields) != len(header):
            skipped.append((f"{path.name}:{number}",
                            Dropped("wrong number of fields", f"{len(fields)} fields, the header has {len(header)}")))
            continue
        rows.append((number, dict(zip(header, fields, strict=True))))
    return rows, skipped, sorted(set(header) - KNOWN_COLUMNS)


def _without_held_out(rows: list, lang_dir: Path, lang: str) -> list:
    """Rows of validated.tsv minus every speaker of dev and test and every sentence that, normalised as for
    the LM, is one of theirs (so 'sofa!' is held out when dev reads 'sofa.')."""
    sentences, speakers = set(), set()
    for split in ("dev", "test"):
        for _, row in read_tsv(lang_dir / f"{split}.tsv")[0]:
            sentences.add(normalize(row["sentence"], lang))
            speakers.add(row["client_id"].strip())
    sentences.discard(None)
    return [(n, r) for n, r in rows
            if r["client_id"].strip() not in speakers and normalize(r["sentence"], lang) not in sentences]


def _id_problem(client: str, clip: str) -> Dropped | None:
    """Why a row's client_id or clip name cannot make its speaker and utterance ids, or None."""
    if not client or not clip.strip():
        return Dropped("empty client_id or path")
    if problem := id_problem(client):
        return Dropped("client_id not usable as a speaker id", f"client_id {client!r} {problem}: not usable as a "
                       "speaker id")
    if problem := id_problem(Path(clip).stem):
        return Dropped("clip name not usable in an utterance id", f"clip name {Path(clip).stem!r} {problem}: not "
                       "usable in an utterance id")
    return None


def _clip(lang_dir: Path, clip: str) -> tuple[Path, float] | Dropped:
    """(the clip's file, its seconds) or the reason to skip it; a clip is a file under clips/, never a
    command."""
    path = corpus_file(lang_dir / "clips", clip)
    if isinstance(path, str):
        return Dropped("clip path refused", path)
    if not path.is_file():
        return Dropped("missing clip", f"missing clip {path}")
    if path.stat().st_size == 0:
        return Dropped("empty clip", "empty clip (0 bytes)")
    try:
        seconds = file_duration(path)
    except AudioError as err:
        return Dropped("unreadable clip", f"unreadable clip: {err}")
    return (path, seconds) if seconds >= MIN_SECONDS else \
        Dropped("clip too short", f"clip of {seconds:.2f} s is too short")


def read_split(lang_dir: Path, lang: str, split: str, train_from_validated: bool = False) -> tuple[DataDir, list[str]]:
    """The data directory of one split of one language, and the lines of its skipped.tsv."""
    source = "validated.tsv" if split == "train" and train_from_validated else f"{split}.tsv"
    rows, skipped, unknown = read_tsv(lang_dir / source)
    if source == "validated.tsv":
        rows = _without_held_out(rows, lang_dir, lang)
    data = DataDir({}, {}, {})
    for number, row in rows:
        where = f"{source}:{number}"
        client, clip = row["client_id"].strip(), row["path"]
        if problem := _id_problem(client, clip):
            skipped.append((where, problem))
            continue
        utt = f"{client}-{Path(clip).stem}"
        if utt in data.utt2spk:
            skipped.append((where, Dropped("duplicate row")))
            continue
        text = normalize_or_drop(row["sentence"], lang)
        found = text if isinstance(text, Dropped) else _clip(lang_dir, clip)
        if isinstance(found, Dropped):
            skipped.append((utt, found))
            continue
        data.wav_scp[utt], data.utt2dur[utt] = str(found[0]), found[1]
        data.text[utt], data.utt2spk[utt], data.utt2lang[utt] = text, client, lang
    if not data.utt2spk:
        raise DataPrepError(f"{lang_dir / source}: no usable utterance ({len(skipped)} skipped: "
                            f"{skipped[0][1] if skipped else 'the file has no rows'})")
    notes = [f"# unknown columns (ignored)\t{' '.join(unknown)}"] if unknown else []
    return data, notes + skipped_lines(skipped)


def prepare(corpus_dir, out_dir, langs=None, splits=SPLITS, train_from_validated: bool = False) -> dict[str, Path]:
    """Data directories out_dir/<lang>/<split> for a Common Voice release at corpus_dir; langs defaults to
    every language directory that has TSV files. Every split is read and validated before any is written."""
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    if not corpus_dir.is_dir():
        raise DataPrepError(f"{corpus_dir}: not a directory")
    if langs is None:
        langs = sorted(p.name for p in corpus_dir.iterdir() if p.is_dir() and any(p.glob("*.tsv")))
        if not langs:
            raise DataPrepError(f"{corpus_dir}: no <lang>/*.tsv inside (is this a Common Voice release?)")
    prepared = {f"{lang}/{split}": read_split(corpus_dir / lang, lang, split, train_from_validated)
                for lang in langs for split in splits}
    return write_prepared(prepared, out_dir)
