"""Kaldi data directories: read, write, validate, fix, subset and combine.

A data directory holds one table per file, one ``key value`` line per entry (Kaldi's
``egs/wsj/s5/utils/validate_data_dir.sh`` and ``fix_data_dir.sh`` define the conventions):

    wav.scp         recording-id  path | command ending in '|'
    text            utterance-id  transcript
    utt2spk         utterance-id  speaker-id
    spk2utt         speaker-id    utterance-id...   (derived from utt2spk; write_data_dir writes it)
    utt2dur         utterance-id  seconds           (optional)
    utt2lang        utterance-id  language          (optional)
    segments        utterance-id  recording-id start end   (optional; without it recordings are utterances)
    feats.scp       utterance-id  ark-path:offset   (optional, from compute-feats, as the two below)
    utt2num_frames  utterance-id  frames
    cmvn.scp        speaker-id    ark-path:offset

`read_data_dir` checks Kaldi's rules (utils/validate_data_dir.sh --no-feats, the feature tables when present,
and utils/validate_text.pl) and names the file and line of every problem:

- every file is UTF-8 and every line ends in "\\n" (the only line separator: no CR, no control character and no
  Unicode line or paragraph separator inside a line), no line is empty, fields are separated by spaces or tabs;
- keys are non-empty without whitespace, unique and sorted in C-locale (byte) order; utt2spk, utt2dur,
  utt2lang and utt2num_frames have 2 fields a line, segments 4;
- utt2spk and spk2utt exist and agree, utt2spk is sorted by speaker too, and there is at least one utterance;
- text, utt2dur, utt2lang and segments hold exactly the utterances of utt2spk; wav.scp holds exactly the
  utterances, or with segments exactly the recordings that segments refers to;
- transcripts are non-empty, with no whitespace but space and tab and none of the words <s> </s> #0;
- durations are positive numbers, segments satisfy 0 <= start < end (an end of -1 is refused, as Kaldi does),
  utt2num_frames holds positive integers;
- feats.scp and utt2num_frames hold the utterances, cmvn.scp the speakers (of spk2utt);
- metarecipe's own rule: every speaker id is a prefix of its utterance ids.

One metarecipe extension: compute-feats leaves the utterances whose audio cannot be read out of feats.scp and
utt2num_frames and lists them in ``feats_skipped.tsv`` (``utterance<TAB>reason`` lines, sorted). feats.scp and
utt2num_frames then hold exactly the utterances it does not list, and cmvn.scp the speakers of those;
`utterances_with_features` gives both sets. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from metarecipe.errors import InputError
from metarecipe.io.atomic import write_text_atomic

UTTERANCE_TABLES = ("text", "utt2spk", "utt2dur", "utt2lang", "segments")
SKIPPED_FEATURES = "feats_skipped.tsv"
RESERVED_WORDS = ("<s>", "</s>", "#0")
MAX_LISTED = 20  # problems of one file, or of the utterances, that a DataDirError lists (then their count)
# fields of a line: (fewest, most or None for "the rest of the line is the value", what a line holds)
FIELDS = {
    "wav.scp": (2, None, "recording path-or-command"),
    "text": (1, None, "utterance transcript"),
    "utt2spk": (2, 2, "utterance speaker"),
    "spk2utt": (2, None, "speaker utterance..."),
    "utt2dur": (2, 2, "utterance seconds"),
    "utt2lang": (2, 2, "utterance language"),
    "segments": (4, 4, "utterance recording start end"),
    "feats.scp": (2, None, "utterance location"),
    "utt2num_frames": (2, 2, "utterance frames"),
    "cmvn.scp": (2, None, "speaker location"),
    SKIPPED_FEATURES: (2, None, "utterance<TAB>reason"),
}
_NUMBERS = ("utt2dur", "segments", "utt2num_frames")  # tables with numbers, checked as lines are read
FEATURE_TABLES = ("feats.scp", "utt2num_frames", "cmvn.scp", SKIPPED_FEATURES)
_BLANKS = re.compile(r"[ \t]+")
# characters no table line may hold: control characters but tab (Unicode category Cc), the line and paragraph
# separators (Zl, Zp), lone surrogates (not UTF-8) and the byte order mark
_BREAKS_BUT_NEWLINE = r"\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff"
_BREAKS_LINES = re.compile(rf"[\n{_BREAKS_BUT_NEWLINE}]")
# the other whitespace (str.isspace) but space: utils/validate_text.pl allows only space and tab in text
_ODD_SPACES = r"\xa0\u1680\u2000-\u200a\u202f\u205f\u3000"
_NOT_IN_IDS = re.compile(rf"[\n{_BREAKS_BUT_NEWLINE}\s]")
_NOT_IN_TEXT = re.compile(rf"[\n{_BREAKS_BUT_NEWLINE}{_ODD_SPACES}]")
_NOT_IN_PLAIN_FILES = re.compile(rf"[{_BREAKS_BUT_NEWLINE}{_ODD_SPACES}]")  # then str.split() finds the fields
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class DataDirError(InputError, ValueError):
    """A data directory that breaks the format or its invariants; the message lists every problem."""


@dataclass
class Segment:
    recording: str
    start: float
    end: float  # seconds, after start (Kaldi's validate_data_dir.sh refuses an end of -1)


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


def printable(text: str) -> str:
    """`text` with every character that is not printable (controls, line separators, odd whitespace) escaped,
    so that a message stays one readable line."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _first_of(problems: list[str], where: str) -> list[str]:
    """The first MAX_LISTED problems, and a line counting the others."""
    more = len(problems) - MAX_LISTED
    return problems[:MAX_LISTED] + ([f"{where}: {more} more problem(s) like these"] if more > 0 else [])


def _describe(char: str) -> str:
    name = "BYTE ORDER MARK" if char == "\ufeff" else unicodedata.name(char, "a control character")
    return f"U+{ord(char):04X} ({name})"


def _control_problem(text: str) -> str | None:
    match = _BREAKS_LINES.search(text)
    return None if match is None else _character_problem(match[0], "")


def _character_problem(char: str, whitespace: str) -> str:
    """"holds <char>, <what it is>": a control or line-separator character, or else `whitespace`."""
    return f"holds {_describe(char)}, " + ("a control or line-separator character" if _BREAKS_LINES.match(char)
                                           else whitespace)


def id_problem(key: str) -> str | None:
    """Why `key` cannot be a Kaldi id (utterance, speaker, recording, language), or None."""
    if not key:
        return "is empty"
    match = _NOT_IN_IDS.search(key)
    return None if match is None else _character_problem(match[0], "whitespace")


def _transcript_problem(transcript: str) -> str | None:
    """Why a transcript breaks utils/validate_text.pl or validate_data_dir.sh, as "has ...", or None."""
    if not transcript.strip(" \t"):
        return "has an empty transcript"
    if match := _NOT_IN_TEXT.search(transcript):
        return f"has a transcript that {_character_problem(match[0], 'whitespace other than space and tab')}"
    if "<" in transcript or "#0" in transcript:
        reserved = next((w for w in _BLANKS.split(transcript) if w in RESERVED_WORDS), None)
        if reserved is not None:
            return f"has '{reserved}' in its transcript, a word Kaldi reserves ({' '.join(RESERVED_WORDS)})"
    return None


def _wav_message(recording: str, problem: str) -> str:
    return f"recording '{printable(recording)}' has a wav.scp entry that {problem}"


def wav_problem(value: str) -> str | None:
    """Why `value` cannot be a wav.scp value (a file or a pipe command), or None."""
    if problem := _control_problem(value):
        return problem
    if value.startswith("~"):
        return "starts with '~' (Kaldi does not expand it: write the whole path)"
    return None if value.strip(" \t") else "is empty"


# --- reading files ---------------------------------------------------------------------------------------------


@dataclass
class _Table:
    """One file of a data directory: values and line numbers by key, and what was wrong with its lines."""

    path: Path
    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # key -> "file:line: reason" of lines left out
    problems: list[str] = field(default_factory=list)  # lines left out: format, characters, fields, numbers
    disorder: list[str] = field(default_factory=list)  # order, duplicates, last newline: tolerated on import

    def where(self, key: str | None = None) -> str:
        return f"{self.path}:{self.lines[key]}" if key in self.lines else str(self.path)

    def reported(self) -> list[str]:
        return _first_of(self.problems + self.disorder, str(self.path))

    def reject(self, number: int, key: str, reason: str) -> None:
        message = f"{self.path}:{number}: {reason}"
        self.problems.append(message)
        self.rejected.setdefault(key, message)

    def add(self, number: int, key: str, value: str, previous: str | None) -> None:
        if key in self.values:
            self.disorder.append(f"{self.path}:{number}: duplicate key '{printable(key)}' (first on line "
                                 f"{self.lines[key]})")
            return
        if previous is not None and key < previous:
            self.disorder.append(f"{self.path}:{number}: '{printable(key)}' is out of order (not sorted as "
                                 "LC_ALL=C sort)")
        self.values[key], self.lines[key] = value, number


def _parse_line(line: str, name: str, plain: bool) -> tuple[str, str] | str:
    """(key, value) of a line (without its "\\n") of table `name`, or why it cannot be read. `plain`: the line
    holds no control character and no whitespace but space and tab (str.split then finds its fields)."""
    if not plain and (problem := _control_problem(line)):
        return "holds a carriage return (CR or CRLF line end)" if "\r" in line else problem
    if not line or line[0] in " \t":
        return "starts with whitespace (an empty key)" if line.strip(" \t") else "empty line"
    fewest, most, holds = FIELDS[name]
    line = line.rstrip(" \t")
    if plain:
        fields = line.split(None, -1 if most else 1)
    else:
        fields = _BLANKS.split(line, maxsplit=0 if most else 1)
    if most is None and len(fields) < fewest:
        return f"'{printable(fields[0])}' has no value"
    if most is not None and not fewest <= len(fields) <= most:
        return f"{len(fields)} fields, {name} lines have {fewest} ({holds})"
    if name in _NUMBERS and (problem := _number_problem(name, fields)):
        return problem
    return fields[0], " ".join(fields[1:])


def _number_problem(name: str, fields: list[str]) -> str | None:
    """Why the numbers of a line of utt2dur, segments or utt2num_frames cannot be read, or None."""
    numbers = {"utt2dur": fields[1:], "segments": fields[2:]}.get(name, [])
    bad = next((v for v in numbers if not _NUMBER.fullmatch(v) or not math.isfinite(float(v))), None)
    if bad is not None:
        return f"'{printable(fields[0])}' has '{printable(bad)}' where a number belongs"
    if name == "utt2num_frames" and not (fields[1].isascii() and fields[1].isdigit() and int(fields[1]) > 0):
        return f"'{printable(fields[0])}' has '{printable(fields[1])}' frames, not a positive integer"
    return None


def _decoded_lines(content: bytes) -> tuple[list[str | UnicodeDecodeError], bool]:
    """The lines of a file split on "\\n" only, each decoded or the UnicodeDecodeError saying why not, and
    whether the file is plain: no control character but "\\n", no whitespace but space, tab and "\\n"."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        lines = []
        for raw in content.split(b"\n"):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                lines.append(err)
        return lines, False
    return text.split("\n"), not _NOT_IN_PLAIN_FILES.search(text)


def _read_table(path: Path) -> _Table:
    """Every line of a table file; lines are split on "\\n" only, fields on spaces and tabs."""
    table = _Table(path)
    try:
        content = path.read_bytes()
    except OSError as err:
        table.problems.append(f"{path}: cannot be read ({err.strerror})")
        return table
    name, (lines, plain) = path.name, _decoded_lines(content)
    if lines[-1] != "":
        table.disorder.append(f"{path}:{len(lines)}: the last line does not end in a newline")
    else:
        lines.pop()
    previous = None
    for number, line in enumerate(lines, start=1):
        parsed = _parse_line(line, name, plain) if type(line) is str else _decoding_problem(line)
        if type(parsed) is str:
            table.reject(number, _first_field(line), parsed)
        else:
            table.add(number, *parsed, previous)
            previous = parsed[0]
    return table


def _decoding_problem(err: UnicodeDecodeError) -> str:
    return f"not UTF-8 ({err.reason} at byte {err.start + 1} of the line)"


def _first_field(line: str | UnicodeDecodeError) -> str:
    """The key of a line that cannot be read, as far as it can be told."""
    if isinstance(line, UnicodeDecodeError):
        line = line.object.decode("utf-8", "replace")
    return _BLANKS.split(line.strip(" \t"), maxsplit=1)[0]


def _read_tables(directory: Path, names) -> dict[str, _Table]:
    """The tables among `names` that exist in the directory, by file name."""
    if not directory.is_dir():
        raise DataDirError(f"{directory}: not a directory")
    return {name: _read_table(directory / name) for name in names if (directory / name).exists()}


def _data_dir(tables: dict[str, _Table]) -> DataDir:
    """The DataDir of tables whose lines have been checked (numbers parse)."""
    def values(name):
        return tables[name].values if name in tables else {}

    segments = {}
    for utt, value in values("segments").items():
        recording, start, end = _BLANKS.split(value)
        segments[utt] = Segment(recording, float(start), float(end))
    return DataDir(dict(values("wav.scp")), dict(values("text")), dict(values("utt2spk")),
                   {utt: float(v) for utt, v in values("utt2dur").items()}, dict(values("utt2lang")), segments)


def _missing(directory: Path, tables: dict[str, _Table], required) -> None:
    missing = [f"{directory / name}: missing" for name in required if name not in tables]
    if missing:
        raise DataDirError("\n".join(missing))


def read_data_dir(directory: str | os.PathLike, validate: bool = True, features: bool = True) -> DataDir:
    """Reads a data directory; with `validate`, raises DataDirError listing every problem found (see the module
    docstring), the feature tables included unless `features` is False (for compute-feats, which rewrites
    them). Without `validate` (for importing foreign directories, then fix_data_dir) lines that cannot be read
    are left out, the first of duplicate keys is kept and unsorted files are accepted: see read_foreign_data_dir."""
    if not validate:
        return read_foreign_data_dir(directory)[0]
    directory = Path(directory)
    names = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur", "utt2lang", "segments")
    tables = _read_tables(directory, names + (FEATURE_TABLES if features else ()))
    _missing(directory, tables, ("wav.scp", "text", "utt2spk", "spk2utt"))
    problems = [p for table in tables.values() for p in table.reported()]
    data = _data_dir(tables)
    problems += _validate(data, lambda name, key=None: tables[name].where(key))
    problems += _file_problems(tables, data)
    if features:
        problems += _feature_problems(tables, data)
    if problems:
        raise DataDirError("\n".join(problems))
    return data


def read_foreign_data_dir(directory: str | os.PathLike) -> tuple[DataDir, dict[str, str]]:
    """A data directory read as leniently as parsing allows, for importing it (then fix_data_dir): lines that
    cannot be read are left out, duplicates after the first and disorder are accepted, spk2utt and the feature
    tables are ignored. Returns the data and {key: "file:line: reason"} of every line left out."""
    directory = Path(directory)
    tables = _read_tables(directory, ("wav.scp", "text", "utt2spk", "utt2dur", "utt2lang", "segments"))
    _missing(directory, tables, ("wav.scp", "text", "utt2spk"))
    rejected: dict[str, str] = {}
    for table in tables.values():
        for key, reason in table.rejected.items():
            rejected.setdefault(key, reason)
    return _data_dir(tables), rejected


def _file_problems(tables: dict[str, _Table], data: DataDir) -> list[str]:
    """What the files break beyond the in-memory rules: spk2utt, empty optional tables, unused recordings."""
    problems = []
    found = {spk: _BLANKS.split(value) for spk, value in tables["spk2utt"].values.items()}
    expected = data.spk2utt
    if list(found.items()) != list(expected.items()) and not tables["spk2utt"].problems:
        table = tables["spk2utt"]
        speaker = next((s for s in [*expected, *found] if found.get(s) != expected.get(s)), None)
        where = "the order of its lines" if speaker is None else f"speaker '{printable(speaker)}'" + (
            f" on line {table.lines[speaker]}" if speaker in table.lines else " (not in spk2utt)")
        problems.append(f"{table.path}: does not match utt2spk (regenerate it from utt2spk): {where}")
    for name in ("utt2dur", "utt2lang", "segments"):
        if name in tables and not tables[name].values and not tables[name].problems and data.utt2spk:
            problems.append(f"{tables[name].path}: empty (lacks all {len(data.utt2spk)} utterances); delete it or "
                            "fill it")
    if data.segments:
        used = {segment.recording for segment in data.segments.values()}
        problems += _extra_keys(tables["wav.scp"], used, "a recording that segments refers to (Kaldi requires "
                                                         "the same recordings in wav.scp and segments)")
    return problems


def _extra_keys(table: _Table, allowed, what: str) -> list[str]:
    """A problem naming the first key of the table that is not in `allowed`, and how many such keys there are."""
    extra = [key for key in table.values if key not in allowed]
    if not extra:
        return []
    more = f" ({len(extra) - 1} more such key(s))" if len(extra) > 1 else ""
    return [f"{table.where(extra[0])}: '{printable(extra[0])}' is not {what}{more}"]


def _lacking_keys(table: _Table, expected: list[str], what: str) -> list[str]:
    lacking = [key for key in expected if key not in table.values]
    if not lacking:
        return []
    return [f"{table.path}: lacks {len(lacking)} {what}, e.g. '{printable(lacking[0])}'"]


def _feature_problems(tables: dict[str, _Table], data: DataDir) -> list[str]:
    """The feature tables against the utterances: feats.scp and utt2num_frames hold those that
    feats_skipped.tsv does not list, cmvn.scp their speakers."""
    problems = []
    skipped = tables[SKIPPED_FEATURES].values if SKIPPED_FEATURES in tables else {}
    if SKIPPED_FEATURES in tables:
        problems += _extra_keys(tables[SKIPPED_FEATURES], data.utt2spk, "an utterance of utt2spk")
    kept = [utt for utt in data.utterances if utt not in skipped]
    for name in ("feats.scp", "utt2num_frames"):
        if name not in tables:
            continue
        table = tables[name]
        for utt in (u for u in table.values if u in skipped):
            problems.append(f"{tables[SKIPPED_FEATURES].where(utt)}: lists '{printable(utt)}', which has an entry "
                            f"in {table.where(utt)} (an utterance has features or is listed, not both)")
        problems += _lacking_keys(table, kept, f"utterance(s) that {SKIPPED_FEATURES} does not list either")
        problems += _extra_keys(table, set(data.utt2spk), "an utterance of utt2spk")
    if "feats.scp" in tables and not kept and data.utt2spk:
        problems.append(f"{tables['feats.scp'].path}: no utterance has features (all are listed in "
                        f"{SKIPPED_FEATURES})")
    if "cmvn.scp" in tables:
        speakers = sorted({data.utt2spk[utt] for utt in kept})
        problems += _lacking_keys(tables["cmvn.scp"], speakers, "speaker(s) of spk2utt (with features)")
        problems += _extra_keys(tables["cmvn.scp"], set(speakers), "a speaker of spk2utt (with features)")
    return problems


def utterances_with_features(directory: str | os.PathLike) -> tuple[list[str], dict[str, str]]:
    """(the utterances that have features, {utterance: reason} of those that compute-feats left out, from
    feats_skipped.tsv) of a valid data directory with feats.scp; DataDirError naming the problems otherwise."""
    directory = Path(directory)
    data = read_data_dir(directory)
    if not (directory / "feats.scp").exists():
        raise DataDirError(f"{directory / 'feats.scp'}: missing; run `metarecipe compute-feats {directory}`")
    path = directory / SKIPPED_FEATURES
    skipped = _read_table(path).values if path.exists() else {}
    return [utt for utt in data.utterances if utt not in skipped], dict(skipped)


# --- rules of the directory in memory --------------------------------------------------------------------------


def _utterance_problems(data: DataDir, utt: str) -> Iterator[tuple[str, str]]:
    """(table, problem) of every rule one utterance breaks; tables that lack it are left to the caller."""
    if problem := id_problem(utt):
        yield "utt2spk", f"utterance id '{printable(utt)}' {problem}"
    speaker = data.utt2spk.get(utt)
    if speaker is not None and (problem := id_problem(speaker)):
        yield "utt2spk", f"speaker id '{printable(speaker)}' of '{printable(utt)}' {problem}"
    elif speaker is not None and not utt.startswith(speaker):
        yield "utt2spk", f"speaker '{printable(speaker)}' is not a prefix of utterance '{printable(utt)}'"
    if utt in data.text and (problem := _transcript_problem(data.text[utt])):
        yield "text", f"utterance '{printable(utt)}' {problem}"
    if utt in data.utt2dur and not (math.isfinite(data.utt2dur[utt]) and data.utt2dur[utt] > 0):
        yield "utt2dur", f"utterance '{printable(utt)}' has duration {data.utt2dur[utt]}"
    language = data.utt2lang.get(utt)
    if language is not None and (problem := id_problem(language)):
        yield "utt2lang", f"utterance '{printable(utt)}' has language '{printable(language)}', which {problem}"
    if utt in data.segments:
        yield from _segment_problems(data, utt)


def _segment_problems(data: DataDir, utt: str) -> Iterator[tuple[str, str]]:
    segment = data.segments[utt]
    if problem := id_problem(segment.recording):
        yield "segments", f"utterance '{printable(utt)}' has recording id '{printable(segment.recording)}', " \
                          f"which {problem}"
    elif segment.recording not in data.wav_scp:
        yield "segments", f"utterance '{printable(utt)}' refers to recording '{printable(segment.recording)}' " \
                          "not in wav.scp"
    if not (math.isfinite(segment.start) and math.isfinite(segment.end) and 0 <= segment.start < segment.end):
        yield "segments", f"utterance '{printable(utt)}' spans [{segment.start}, {segment.end}]: segments need " \
                          "0 <= start < end (no -1 for the end of the recording)"


def _coverage_problems(data: DataDir, locate) -> list[str]:
    """Per-utterance tables, and wav.scp without segments, that lack utterances of utt2spk or have others."""
    problems = []
    tables = {**data.tables(), **({} if data.segments else {"wav.scp": data.wav_scp})}
    for name, table in tables.items():
        missing, extra = data.utt2spk.keys() - table.keys(), table.keys() - data.utt2spk.keys()
        if missing:
            problems.append(f"{locate(name)}: lacks {len(missing)} utterance(s) of utt2spk, e.g. "
                            f"'{printable(min(missing))}'")
        if extra:
            problems.append(f"{locate(name, min(extra))}: has {len(extra)} utterance(s) not in utt2spk, e.g. "
                            f"'{printable(min(extra))}'")
    return problems


def _speaker_order_problem(data: DataDir, locate) -> list[str]:
    """utt2spk must be sorted by speaker as well as by utterance (validate_data_dir.sh: sort -k2 -C)."""
    utterances = data.utterances
    for before, utt in zip(utterances, utterances[1:], strict=False):
        if data.utt2spk[utt] < data.utt2spk[before]:
            return [f"{locate('utt2spk', utt)}: speaker '{printable(data.utt2spk[utt])}' of '{printable(utt)}' sorts "
                    f"before speaker '{printable(data.utt2spk[before])}' of the line above: utt2spk must be sorted "
                    "by speaker too (Kaldi's sort -k2 check; speaker ids that are prefixes of the utterance ids, "
                    "followed by '-', keep it unless they hold a character that sorts before '-', such as '+')"]
    return []


def _validate(data: DataDir, locate: Callable[..., str]) -> list[str]:
    """Every broken rule of an in-memory data directory; locate(table, key=None) says where a message points."""
    problems = [] if data.utt2spk else [f"{locate('utt2spk')}: no utterances (the data directory is empty)"]
    problems += _coverage_problems(data, locate)
    listed = [f"{locate(name, utt)}: {problem}" for utt in data.utterances
              for name, problem in _utterance_problems(data, utt)]
    for recording, value in data.wav_scp.items():
        if recording not in data.utt2spk and (problem := id_problem(recording)):  # utterance ids: see above
            listed.append(f"{locate('wav.scp', recording)}: recording id '{printable(recording)}' {problem}")
        elif problem := wav_problem(value):
            listed.append(f"{locate('wav.scp', recording)}: {_wav_message(recording, problem)}")
    return problems + _first_of(listed, "the data directory") + _speaker_order_problem(data, locate)


def validate_data_dir(data: DataDir, where: str = "data dir") -> list[str]:
    """Every broken invariant of an in-memory data directory, as messages naming table and key."""
    return _validate(data, lambda name, key=None: f"{where}/{name}")


# --- writing and changing -------------------------------------------------------------------------------------


def _write_lines(path: Path, lines: list[str]) -> None:
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def write_data_dir(data: DataDir, directory: str | os.PathLike) -> Path:
    """Writes every table sorted in C-locale order, spk2utt included, after validating (nothing is written,
    not even the directory, when validation fails). Returns the path."""
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
    """Keeps the utterances that every table has and that break no rule of their own (non-empty transcript,
    known recording, ids without whitespace...), like Kaldi's fix_data_dir.sh. Returns the fixed directory and
    {dropped utterance: reason}."""
    dropped: dict[str, str] = {}
    candidates = set().union(*(set(t) for t in data.tables().values()))
    for utt in sorted(candidates):
        lacking = [name for name, table in data.tables().items() if utt not in table]
        if lacking:
            dropped[utt] = f"missing from {', '.join(lacking)}"
        elif not data.text[utt].strip(" \t"):
            dropped[utt] = "empty transcript"
        elif not data.segments and utt not in data.wav_scp:
            dropped[utt] = f"recording '{printable(utt)}' not in wav.scp"
        elif problem := next(_utterance_problems(data, utt), None):
            dropped[utt] = problem[1]
        elif problem := wav_problem(data.wav_scp[data.recording_of(utt)]):
            dropped[utt] = _wav_message(data.recording_of(utt), problem)
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
