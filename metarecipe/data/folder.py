"""A folder of one speaker's recordings with one transcript file, made into a Kaldi data dir with features.

The folder holds audio files (anything soundfile reads: wav, flac, mp3, ogg; any rate and channel count) and ONE
transcript file, `transcripts.txt` or `transcripts.tsv`, with one line per recording:

    <file name><TAB or spaces><transcript>

The file name is relative to the folder (subfolders allowed): the exact name, or its stem where one audio file
alone has that stem (`rec01` for `rec01.flac`). With a tab on the line the name runs to the first tab (so it may
hold spaces), else to the first space. A first line with the columns `path` and `sentence` (Common Voice's TSV
header; other columns are ignored) names the columns instead. Blank lines are ignored.

A file name is text, never a command or a path out of the folder: an absolute name, one with a `..` part or one
that wav.scp would read as a command (ending in '|') is a bad line. Bad lines (no such file, an empty
transcript or one the normaliser drops, audio that cannot be decoded) are reported on stderr as
`transcripts.txt:LINE: NAME: reason` and left out; a transcript with characters outside the model's token table
is an error naming its line and recording, and so is a folder with nothing usable left.

Transcripts are normalised by metarecipe.text.normalize in `lang` (numbers spelled out) or, without one, only
lower-cased with punctuation removed. The data dir (`write_folder_data_dir`) has one speaker, absolute file
paths in wav.scp and features made by compute-feats with the model's front end (its fbank settings; no cmvn.scp
where the front end does not normalise), so that they are what compute-feats would make of the same audio.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path, PurePath

from metarecipe.data.audio import AudioError, read_audio_file
from metarecipe.data.datadir import DataDir, wav_problem, write_data_dir
from metarecipe.errors import InputError
from metarecipe.features.extract import compute_feats
from metarecipe.features.frontend import Frontend
from metarecipe.text.normalize import Dropped, normalize_or_drop
from metarecipe.text.numbers import DIGITS_NOT_SPELLED
from metarecipe.text.tokens import TokenTable

TRANSCRIPT_FILES = ("transcripts.txt", "transcripts.tsv")
SPEAKER = "voice"  # the one speaker of a folder; a prefix of every utterance id
HEADER = ("path", "sentence")  # the columns of a Common Voice TSV
MAX_LISTED = 10  # lines with unknown characters an error lists
NO_LANG = "und"  # the normaliser's language without `lang`: any script, digits not spelled


class FolderError(InputError, ValueError):
    """A folder of recordings that cannot be used; the message names the folder or the line."""


@dataclass(frozen=True)
class Line:
    """A line of a transcript file: its number, the file name and the transcript as written."""

    number: int
    name: str
    text: str


@dataclass(frozen=True)
class Recording:
    """A usable line: its number and file name, its utterance id, the audio file (resolved), the normalised
    transcript and the seconds of audio (0 until decoded)."""

    line: int
    name: str
    utt: str
    path: Path
    text: str
    seconds: float = 0.0


Bad = tuple[int, str]  # a bad line: its number and "file:line: name: reason"


def recordings_folder(data) -> Path | None:
    """`data` as a folder of recordings: a directory without wav.scp (a Kaldi data dir has one), else None."""
    if not isinstance(data, str | PurePath) or not str(data):
        return None
    path = Path(data).expanduser()
    return path if path.is_dir() and not (path / "wav.scp").exists() else None


def transcript_file(folder: Path) -> Path:
    """The folder's one transcript file, or FolderError saying what the folder lacks."""
    found = [folder / name for name in TRANSCRIPT_FILES if (folder / name).is_file()]
    if not found:
        raise FolderError(f"{folder}: neither a Kaldi data dir (no wav.scp) nor a folder of recordings (no "
                          f"{' or '.join(TRANSCRIPT_FILES)}: one '<file name><TAB or space><transcript>' line per "
                          "recording)")
    if len(found) > 1:
        raise FolderError(f"{folder}: holds both {found[0].name} and {found[1].name}; keep one transcript file")
    return found[0]


def _text_lines(path: Path) -> list[tuple[int, str | None]]:
    """(number, line) of every non-blank line, the line None where it is not UTF-8."""
    lines = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").lstrip("\ufeff").rstrip("\r")
        except UnicodeDecodeError:
            lines.append((number, None))
            continue
        if line.strip():
            lines.append((number, line))
    return lines


def _columns(first: str | None) -> tuple[int, int] | None:
    """(path column, sentence column) when the first line is a header naming both, else None."""
    fields = [f.strip().lower() for f in (first or "").split("\t")]
    if all(name in fields for name in HEADER):
        return fields.index(HEADER[0]), fields.index(HEADER[1])
    return None


def _split(line: str, columns: tuple[int, int] | None) -> tuple[str, str] | None:
    """(file name, transcript) of a line, None where a header's columns are missing."""
    if columns is not None:
        fields = line.split("\t")
        if len(fields) <= max(columns):
            return None
        return fields[columns[0]].strip(), fields[columns[1]].strip()
    if "\t" in line:
        name, _, text = line.partition("\t")
        return name.strip(), text.strip()
    parts = line.strip().split(None, 1)
    return parts[0], parts[1] if len(parts) > 1 else ""


def read_lines(path: Path) -> tuple[list[Line], list[Bad]]:
    """The lines of a transcript file, and the bad ones that cannot be split."""
    lines, bad = [], []
    numbered = _text_lines(path)
    columns = _columns(numbered[0][1]) if numbered else None
    for number, line in numbered[1:] if columns else numbered:
        split = None if line is None else _split(line, columns)
        if line is None:
            bad.append((number, f"{path}:{number}: not UTF-8 text"))
        elif split is None:
            bad.append((number, f"{path}:{number}: fewer columns than the header ({'/'.join(HEADER)})"))
        else:
            lines.append(Line(number, *split))
    return lines, bad


def name_problem(name: str) -> str | None:
    """Why a file name from a transcript line cannot name a file inside the folder, or None."""
    if not name:
        return "no file name"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "a file name with a control character"
    if PurePath(name).is_absolute() or ".." in PurePath(name).parts:
        return "outside the folder: file names are relative to it, without '..'"
    if name.endswith("|"):
        return "ends in '|', which wav.scp would run as a command"
    return None


def find_file(folder: Path, name: str) -> Path | str:
    """The file inside `folder` that `name` names (the exact name, else an unambiguous stem), or why none."""
    if problem := name_problem(name):
        return problem
    exact = folder / name
    if exact.is_file():
        return exact
    stem = PurePath(name).name
    candidates = sorted(p for p in exact.parent.glob(f"{_escaped(stem)}.*")
                        if p.is_file() and p.stem == stem and p.name not in TRANSCRIPT_FILES) \
        if exact.parent.is_dir() else []
    if len(candidates) > 1:
        return f"ambiguous: {', '.join(p.name for p in candidates)}; give the whole file name"
    return candidates[0] if candidates else "no such file in the folder"


def _escaped(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def normalised(text: str, lang: str | None) -> str | Dropped:
    """The transcript normalised in `lang` (or lower-cased without punctuation), or why it is dropped."""
    if not text.strip():
        return Dropped("empty transcript")
    result = normalize_or_drop(text, lang or NO_LANG)
    if isinstance(result, Dropped) and result.kind == DIGITS_NOT_SPELLED and lang is None:
        return Dropped(DIGITS_NOT_SPELLED, "numbers written in digits: write them in words, or give lang=xx to "
                                           "spell them out in that language")
    return result


def utterance_id(line: int, path: Path) -> str:
    """A Kaldi utterance id: the speaker, the line number (so ids sort as the lines) and the file's stem."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:40]
    return f"{SPEAKER}-{line:06d}-{stem}"


def unknown_characters(text: str, tokens: TokenTable) -> list[str]:
    return sorted({ch for ch in text if ch != " " and ch not in tokens.ids})


def checked_lines(transcripts: Path, tokens: TokenTable, lang: str | None) -> tuple[list[Recording], list[Bad]]:
    """The lines whose file and transcript are usable, as recordings not yet decoded, and the bad lines;
    FolderError naming the lines whose transcripts have characters outside the token table."""
    folder = transcripts.parent
    lines, bad = read_lines(transcripts)
    recordings, unknown, first_line = [], [], {}
    for line in lines:
        where = f"{transcripts}:{line.number}: {line.name}"
        found = find_file(folder, line.name)
        text = normalised(line.text, lang)
        if isinstance(found, str) or isinstance(text, Dropped):
            bad.append((line.number, f"{where}: {found if isinstance(found, str) else text}"))
        elif found.resolve() in first_line:
            bad.append((line.number, f"{where}: the same file as line {first_line[found.resolve()]}"))
        elif chars := unknown_characters(text, tokens):
            unknown.append(f"{where}: {' '.join(chars)}")
        else:
            first_line[found.resolve()] = line.number
            recordings.append(Recording(line.number, line.name, utterance_id(line.number, found), found.resolve(),
                                        text))
    if unknown:
        more = f" (and {len(unknown) - MAX_LISTED} more lines)" if len(unknown) > MAX_LISTED else ""
        raise FolderError(f"transcripts with characters outside the model's token table ({len(tokens)} tokens); use "
                          "a model whose tokens cover the language of the recordings:\n" +
                          "\n".join(unknown[:MAX_LISTED]) + more)
    return recordings, bad


def path_problem(path: Path) -> str | None:
    """Why a file's path cannot be a wav.scp value that names it (and nothing else), or None."""
    spec = str(path)
    if problem := wav_problem(spec):
        return f"its path {problem}"
    if spec.endswith("|") or spec != spec.rstrip():
        return "its path ends in '|' or a space, which wav.scp cannot hold as a file name"
    return None


def decoded(recording: Recording, transcripts: Path, sample_rate: int) -> Recording | Bad:
    """The recording with its seconds of audio, or the bad line saying why its audio cannot be used."""
    where = f"{transcripts}:{recording.line}: {recording.name}"
    if problem := path_problem(recording.path):
        return recording.line, f"{where}: {problem}"
    try:
        samples = read_audio_file(recording.path, sample_rate)
    except AudioError as err:
        return recording.line, f"{where}: {str(err).removeprefix(f'{recording.path}: ')}"
    return replace(recording, seconds=len(samples) / sample_rate)


def read_folder(folder: Path, tokens: TokenTable, lang: str | None, sample_rate: int) -> list[Recording]:
    """The usable recordings of a folder, each decoded once (at `sample_rate`) to check its audio; every bad
    line is reported on stderr and left out. FolderError without a transcript file, with characters outside the
    token table, or when nothing usable is left."""
    transcripts = transcript_file(folder)
    candidates, bad = checked_lines(transcripts, tokens, lang)
    recordings = []
    for recording in candidates:
        result = decoded(recording, transcripts, sample_rate)
        if isinstance(result, Recording):
            recordings.append(result)
        else:
            bad.append(result)
    for _, reason in sorted(bad):
        print(f"metarecipe: warning: {reason}; left out", file=sys.stderr, flush=True)
    if not recordings:
        raise FolderError(f"{transcripts}: no usable recording ({len(bad)} bad line(s), reported above)"
                          if bad else f"{transcripts}: lists no recording")
    seconds = sum(r.seconds for r in recordings)
    print(f"{folder}: {len(recordings)} recording(s), {seconds / 60:.2f} min of audio, {len(bad)} bad line(s) "
          "left out", flush=True)
    return recordings


def write_folder_data_dir(recordings: list[Recording], out_dir: Path, frontend: Frontend) -> dict:
    """Writes the recordings as a data dir with features made with `frontend` (see the module docstring);
    returns compute-feats' summary (utterances, frames, skipped)."""
    data = DataDir(wav_scp={r.utt: str(r.path) for r in recordings}, text={r.utt: r.text for r in recordings},
                   utt2spk={r.utt: SPEAKER for r in recordings},
                   utt2dur={r.utt: max(r.seconds, 0.001) for r in recordings})
    write_data_dir(data, out_dir)
    summary = compute_feats(out_dir, nj=1, config=frontend.fbank, progress=False)
    if frontend.cmvn == "none":
        (out_dir / "cmvn.scp").unlink(missing_ok=True)  # the model's features are not normalised per speaker
    return summary
