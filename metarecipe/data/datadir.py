"""Kaldi data directories: read, write, validate, fix, subset and combine.

A data directory holds one table per file, one ``key value`` line per entry (Kaldi's
``egs/wsj/s5/utils/validate_data_dir.sh`` and ``fix_data_dir.sh`` define the conventions):

    wav.scp    recording-id  path | command ending in '|'
    text       utterance-id  transcript
    utt2spk    utterance-id  speaker-id       (spk2utt is derived from it)
    utt2dur    utterance-id  seconds          (optional)
    utt2lang   utterance-id  language         (optional)
    segments   utterance-id  recording-id start end   (optional; without it recordings are utterances)

Invariants: keys unique and sorted in C-locale (byte) order, every speaker id a prefix of its utterance ids,
and the same utterance set in every per-utterance table. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

UTTERANCE_TABLES = ("text", "utt2spk", "utt2dur", "utt2lang", "segments")


class DataDirError(ValueError):
    """A data directory that breaks the format or its invariants; the message lists every problem."""


@dataclass
class Segment:
    recording: str
    start: float
    end: float  # -1 means the end of the recording, as in Kaldi


@dataclass
class DataDir:
    """A data directory in memory. Tables map keys to values; optional tables are empty when absent."""

    wav_scp: dict[str, str]
    text: dict[str, str]
    utt2spk: dict[str, str]
    utt2dur: dict[str, float] = field(default_factory=dict)
    utt2lang: dict[str, str] = field(default_factory=dict)
    segments: dict[str, Segment] = field(default_factory=dict)

    @property
    def utterances(self) -> list[str]:
        return sorted(self.utt2spk)

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        speakers: dict[str, list[str]] = {}
        for utt in self.utterances:
            speakers.setdefault(self.utt2spk[utt], []).append(utt)
        return dict(sorted(speakers.items()))

    def recording_of(self, utt: str) -> str:
        return self.segments[utt].recording if self.segments else utt

    def tables(self) -> dict[str, dict]:
        """The per-utterance tables that are present, by file name."""
        tables = {"text": self.text, "utt2spk": self.utt2spk, "utt2dur": self.utt2dur, "utt2lang": self.utt2lang,
                  "segments": self.segments}
        return {name: table for name, table in tables.items() if name in ("text", "utt2spk") or table}


def _read_table(path: Path, problems: list[str], min_fields: int = 2) -> list[tuple[int, str, str]]:
    """(line number, key, rest) of every line; format problems go to `problems` with file and line."""
    rows = []
    try:
        content = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        problems.append(f"{path}:{line}: not UTF-8 ({err.reason})")
        return rows
    for number, line in enumerate(content.splitlines(), start=1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            problems.append(f"{path}:{number}: empty line")
        elif min_fields > 1 and len(parts) < 2:
            problems.append(f"{path}:{number}: '{parts[0]}' has no value")
        else:
            rows.append((number, parts[0], parts[1] if len(parts) > 1 else ""))
    return rows


def _keyed(path: Path, rows, problems: list[str]) -> dict[str, str]:
    """Rows as a dict, recording duplicate and out-of-order keys (C-locale order) as problems."""
    table: dict[str, str] = {}
    previous = None
    for number, key, value in rows:
        if key in table:
            problems.append(f"{path}:{number}: duplicate key '{key}'")
            continue
        if previous is not None and key < previous:
            problems.append(f"{path}:{number}: '{key}' is out of order (not sorted as LC_ALL=C sort)")
        previous = key
        table[key] = value
    return table


def _parse_float(path: Path, key: str, value: str, problems: list[str]) -> float | None:
    try:
        return float(value)
    except ValueError:
        problems.append(f"{path}: '{key}' has '{value}' where a number belongs")
        return None


def read_data_dir(directory: str | os.PathLike, validate: bool = True) -> DataDir:
    """Reads a data directory; with `validate`, raises DataDirError listing every problem found. Without it
    (for importing foreign directories, then fix_data_dir), format problems are tolerated where parsing allows:
    the first of duplicate keys is kept and unsorted files are accepted."""
    directory = Path(directory)
    problems: list[str] = []
    if not directory.is_dir():
        raise DataDirError(f"{directory}: not a directory")
    tables: dict[str, dict[str, str]] = {}
    for name in ("wav.scp", "text", "utt2spk", "utt2dur", "utt2lang", "segments", "spk2utt"):
        path = directory / name
        if path.exists():
            tables[name] = _keyed(path, _read_table(path, problems, min_fields=1 if name == "text" else 2), problems)
        elif name in ("wav.scp", "text", "utt2spk"):
            problems.append(f"{path}: missing")
    if problems and any(p.endswith(": missing") for p in problems):
        raise DataDirError("\n".join(problems))
    utt2dur = {}
    for key, value in tables.get("utt2dur", {}).items():
        seconds = _parse_float(directory / "utt2dur", key, value, problems)
        if seconds is not None:
            utt2dur[key] = seconds
    segments = {}
    for key, value in tables.get("segments", {}).items():
        fields = value.split()
        if len(fields) != 3:
            problems.append(f"{directory / 'segments'}: '{key}' needs 'recording start end', got '{value}'")
            continue
        start, end = (_parse_float(directory / "segments", key, f, problems) for f in fields[1:])
        if start is not None and end is not None:
            segments[key] = Segment(fields[0], start, end)
    data = DataDir(tables["wav.scp"], tables["text"], tables["utt2spk"], utt2dur, tables.get("utt2lang", {}),
                   segments)
    if "spk2utt" in tables:
        expected = {spk: " ".join(utts) for spk, utts in data.spk2utt.items()}
        found = {spk: " ".join(value.split()) for spk, value in tables["spk2utt"].items()}
        if expected != found:
            problems.append(f"{directory / 'spk2utt'}: does not match utt2spk (regenerate it from utt2spk)")
    if validate:
        problems += validate_data_dir(data, str(directory))
        if problems:
            raise DataDirError("\n".join(problems))
    return data


def validate_data_dir(data: DataDir, where: str = "data dir") -> list[str]:
    """Every broken invariant of an in-memory data directory, as messages naming table and key."""
    problems = []
    utterances = set(data.utt2spk)
    for name, table in data.tables().items():
        if set(table) != utterances:
            missing, extra = sorted(utterances - set(table)), sorted(set(table) - utterances)
            if missing:
                problems.append(f"{where}/{name}: lacks {len(missing)} utterance(s) of utt2spk, e.g. '{missing[0]}'")
            if extra:
                problems.append(f"{where}/{name}: has {len(extra)} utterance(s) not in utt2spk, e.g. '{extra[0]}'")
    for utt, spk in data.utt2spk.items():
        if not utt.startswith(spk):
            problems.append(f"{where}/utt2spk: speaker '{spk}' is not a prefix of utterance '{utt}'")
    for utt, transcript in data.text.items():
        if not transcript.strip():
            problems.append(f"{where}/text: utterance '{utt}' has an empty transcript")
    for utt, seconds in data.utt2dur.items():
        if not seconds > 0:
            problems.append(f"{where}/utt2dur: utterance '{utt}' has duration {seconds}")
    recordings = {data.recording_of(utt) for utt in utterances}
    if not data.segments and set(data.wav_scp) != recordings:
        problems.append(f"{where}/wav.scp: recording ids differ from the utterance ids (and there is no segments)")
    for utt, seg in data.segments.items():
        if seg.recording not in data.wav_scp:
            problems.append(f"{where}/segments: utterance '{utt}' refers to recording '{seg.recording}' not in wav.scp")
        if seg.start < 0 or (seg.end != -1 and seg.end <= seg.start):
            problems.append(f"{where}/segments: utterance '{utt}' spans [{seg.start}, {seg.end}]")
    return problems


def read_key_values(path: str | os.PathLike) -> dict[str, str]:
    """A `key value` file (scp, utt2num_frames, utt2<key>, skipped.tsv) as a dict; blank lines ignored."""
    text = Path(path).read_text(encoding="utf-8")
    return dict(line.split(maxsplit=1) for line in text.splitlines() if line)


def _write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_data_dir(data: DataDir, directory: str | os.PathLike) -> Path:
    """Writes every table sorted in C-locale order, spk2utt included, after validating. Returns the path."""
    problems = validate_data_dir(data, str(directory))
    if problems:
        raise DataDirError("\n".join(problems))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    used_recordings = {data.recording_of(utt) for utt in data.utterances}
    _write_lines(directory / "wav.scp", [f"{r} {data.wav_scp[r]}" for r in sorted(used_recordings)])
    _write_lines(directory / "text", [f"{u} {data.text[u]}" for u in data.utterances])
    _write_lines(directory / "utt2spk", [f"{u} {data.utt2spk[u]}" for u in data.utterances])
    _write_lines(directory / "spk2utt", [f"{s} {' '.join(us)}" for s, us in data.spk2utt.items()])
    if data.utt2dur:
        _write_lines(directory / "utt2dur", [f"{u} {data.utt2dur[u]:.3f}" for u in data.utterances])
    if data.utt2lang:
        _write_lines(directory / "utt2lang", [f"{u} {data.utt2lang[u]}" for u in data.utterances])
    if data.segments:
        _write_lines(directory / "segments", [
            f"{u} {s.recording} {s.start:.3f} {s.end:.3f}" for u in data.utterances for s in [data.segments[u]]])
    return directory


def fix_data_dir(data: DataDir) -> tuple[DataDir, dict[str, str]]:
    """Keeps the utterances that every table has, with a non-empty transcript and a known recording, like
    Kaldi's fix_data_dir.sh. Returns the fixed directory and {dropped utterance: reason}."""
    dropped: dict[str, str] = {}
    candidates = set().union(*(set(t) for t in data.tables().values()))
    for utt in sorted(candidates):
        lacking = [name for name, table in data.tables().items() if utt not in table]
        if lacking:
            dropped[utt] = f"missing from {', '.join(lacking)}"
        elif not data.text[utt].strip():
            dropped[utt] = "empty transcript"
        elif not utt.startswith(data.utt2spk[utt]):
            dropped[utt] = f"speaker '{data.utt2spk[utt]}' is not a prefix"
        elif data.recording_of(utt) not in data.wav_scp:
            dropped[utt] = f"recording '{data.recording_of(utt)}' not in wav.scp"
        elif data.utt2dur and not data.utt2dur[utt] > 0:
            dropped[utt] = f"duration {data.utt2dur[utt]}"
    keep = sorted(candidates - set(dropped))
    return subset_data_dir(data, keep), dropped


def subset_data_dir(data: DataDir, utterances) -> DataDir:
    """The directory restricted to the given utterance ids (unknown ids raise KeyError naming them)."""
    keep = sorted(set(utterances))
    unknown = [u for u in keep if u not in data.utt2spk]
    if unknown:
        raise KeyError(f"{len(unknown)} utterance(s) not in the data directory, e.g. '{unknown[0]}'")

    def pick(table):
        return {u: table[u] for u in keep if u in table}

    recordings = {data.recording_of(u) for u in keep}
    return replace(data, wav_scp={r: data.wav_scp[r] for r in sorted(recordings) if r in data.wav_scp},
                   text=pick(data.text), utt2spk=pick(data.utt2spk), utt2dur=pick(data.utt2dur),
                   utt2lang=pick(data.utt2lang), segments=pick(data.segments))


def combine_data_dirs(parts: list[DataDir]) -> DataDir:
    """The union of data directories with disjoint utterance ids (a shared recording must be identical)."""
    combined = DataDir({}, {}, {})
    for index, part in enumerate(parts):
        clash = sorted(set(combined.utt2spk) & set(part.utt2spk))
        if clash:
            raise DataDirError(f"directory {index} repeats {len(clash)} utterance id(s), e.g. '{clash[0]}'")
        for rec, value in part.wav_scp.items():
            if combined.wav_scp.get(rec, value) != value:
                raise DataDirError(f"directory {index} gives recording '{rec}' another source: '{value}'")
        if bool(combined.segments) != bool(part.segments) and combined.utt2spk:
            raise DataDirError(f"directory {index}: cannot combine directories with and without segments")
        for name in ("wav_scp", "text", "utt2spk", "utt2dur", "utt2lang", "segments"):
            getattr(combined, name).update(getattr(part, name))
    return combined
