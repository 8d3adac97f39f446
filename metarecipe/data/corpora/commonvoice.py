"""Common Voice releases: ``<root>/<lang>/{train,dev,test,validated,invalidated,other}.tsv`` and
``<root>/<lang>/clips/*.mp3``.

The TSV columns changed across releases (older ones lack ``sentence_id``, ``sentence_domain``, ``variant``,
``segment``, and the order differs), so rows are read by header name, with quoting off (sentences contain
quote characters). Only ``client_id``, ``path`` and ``sentence`` are needed. The utterance id is
``<client_id>-<clip stem>`` and the speaker is the client. Transcripts are normalised for the language
(metarecipe.text.normalize).

Bad rows never stop the preparation: a missing, empty, undecodable or too short clip, a transcript empty or
unspeakable after normalisation, a duplicate row or undecodable bytes are skipped and listed with their reason
in ``skipped.tsv`` beside the data directory. It stops with DataPrepError only when a TSV is missing or lacks a
needed column, or when nothing usable is left.
"""

from __future__ import annotations

from pathlib import Path

from metarecipe.data.audio import AudioError, duration
from metarecipe.data.corpora import DataPrepError
from metarecipe.data.datadir import DataDir, write_data_dir
from metarecipe.text.normalize import normalize

REQUIRED_COLUMNS = ("client_id", "path", "sentence")
KNOWN_COLUMNS = {"client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes",
                 "age", "gender", "accent", "accents", "variant", "locale", "segment"}
SPLITS = ("train", "dev", "test")
MIN_SECONDS = 0.2


def read_tsv(path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[tuple[str, str]], list[str]]:
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
            skipped.append((f"{path.name}:{number}", f"not UTF-8 ({err.reason} at byte {err.start})"))
            continue
        if len(fields) != len(header):
            skipped.append((f"{path.name}:{number}", f"{len(fields)} fields, the header has {len(header)}"))
            continue
        rows.append((number, dict(zip(header, fields, strict=True))))
    return rows, skipped, sorted(set(header) - KNOWN_COLUMNS)


def _train_from_validated(lang_dir: Path) -> tuple[list, list]:
    """validated.tsv minus every sentence and speaker of dev and test."""
    rows, skipped, _ = read_tsv(lang_dir / "validated.tsv")
    held_out_sentences, held_out_speakers = set(), set()
    for split in ("dev", "test"):
        for _, row in read_tsv(lang_dir / f"{split}.tsv")[0]:
            held_out_sentences.add(row["sentence"])
            held_out_speakers.add(row["client_id"])
    kept = [(n, r) for n, r in rows if r["sentence"] not in held_out_sentences
            and r["client_id"] not in held_out_speakers]
    return kept, skipped


def prepare_split(lang_dir: Path, lang: str, split: str, out_dir: Path, train_from_validated: bool = False) -> Path:
    """Writes out_dir (a data directory) and out_dir/skipped.tsv for one split of one language."""
    if split == "train" and train_from_validated:
        rows, skipped = _train_from_validated(lang_dir)
        unknown: list[str] = []
    else:
        rows, skipped, unknown = read_tsv(lang_dir / f"{split}.tsv")
    data = DataDir({}, {}, {})
    for number, row in rows:
        where = f"{split}.tsv:{number}"
        client, clip = row["client_id"].strip(), row["path"].strip()
        if not client or not clip:
            skipped.append((where, "empty client_id or path"))
            continue
        utt = f"{client}-{Path(clip).stem}"
        clip_path = lang_dir / "clips" / clip
        reason = None
        if utt in data.utt2spk:
            reason = "duplicate row"
        elif (text := normalize(row["sentence"], lang)) is None:
            reason = "transcript empty, or with digits or another script, after normalisation"
        elif not clip_path.is_file():
            reason = f"missing clip {clip_path}"
        elif clip_path.stat().st_size == 0:
            reason = "empty clip (0 bytes)"
        else:
            try:
                seconds = duration(str(clip_path))
                reason = f"clip of {seconds:.2f} s is too short" if seconds < MIN_SECONDS else None
            except AudioError as err:
                reason = f"unreadable clip: {err}"
        if reason:
            skipped.append((utt if reason != "duplicate row" else where, reason))
            continue
        data.wav_scp[utt] = str(clip_path.resolve())
        data.text[utt] = text
        data.utt2spk[utt] = client
        data.utt2dur[utt] = seconds
        data.utt2lang[utt] = lang
    if not data.utt2spk:
        raise DataPrepError(f"{lang_dir}/{split}.tsv: no usable utterance ({len(skipped)} skipped: "
                            f"{skipped[0][1] if skipped else 'the file has no rows'})")
    write_data_dir(data, out_dir)
    notes = [f"# unknown columns (ignored)\t{' '.join(unknown)}"] if unknown else []
    (out_dir / "skipped.tsv").write_text("\n".join(notes + [f"{w}\t{r}" for w, r in skipped]) + "\n",
                                         encoding="utf-8")
    return out_dir


def prepare(corpus_dir, out_dir, langs=None, splits=SPLITS, train_from_validated: bool = False) -> dict[str, Path]:
    """Data directories out_dir/<lang>/<split> for a Common Voice release at corpus_dir; langs defaults to
    every language directory that has TSV files."""
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    if not corpus_dir.is_dir():
        raise DataPrepError(f"{corpus_dir}: not a directory")
    if langs is None:
        langs = sorted(p.name for p in corpus_dir.iterdir() if p.is_dir() and any(p.glob("*.tsv")))
        if not langs:
            raise DataPrepError(f"{corpus_dir}: no <lang>/*.tsv inside (is this a Common Voice release?)")
    written = {}
    for lang in langs:
        for split in splits:
            written[f"{lang}/{split}"] = prepare_split(corpus_dir / lang, lang, split, out_dir / lang / split,
                                                       train_from_validated)
    return written
