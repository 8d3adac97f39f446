"""Reading Kaldi tables: `key value` lines (text, utt2spk, wav.scp, feats.scp, utt2num_frames, hypotheses).

The one reader of a table as a dict, for every table but a data directory's own, which
metarecipe.data.datadir validates line by line to report every problem at once. As in Kaldi, lines end at
"\\n" and the key ends at the first run of spaces or tabs; the value is the rest of the line, stripped of outer
spaces and tabs. No torch here (score and lm-text read tables and start fast).
"""

from __future__ import annotations

import re
from pathlib import Path

from metarecipe.errors import InputError

_BLANKS = re.compile(r"[ \t]+")


class TableError(InputError, ValueError):
    """A table that cannot be read or breaks the format; the message names the file and line."""


def read_table(path, need_value: bool = True) -> dict[str, str]:
    """{key: value} of a table file; TableError naming the file (and line) when it cannot be read, is not
    UTF-8, has a line without a key (empty, or starting with a blank), a key twice, or (need_value) a key
    without a value."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as err:  # missing, unreadable, a directory
        raise TableError(f"{path}: {err.strerror}") from None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as err:
        line = content[: err.start].count(b"\n") + 1
        raise TableError(f"{path}:{line}: not UTF-8 ({err.reason})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    table: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip(" \t\r") or line[0] in " \t":
            raise TableError(f"{path}:{number}: no key at the start of the line")
        key, *rest = _BLANKS.split(line.rstrip("\r"), maxsplit=1)
        if key in table:
            raise TableError(f"{path}:{number}: duplicate key '{key}' (first on line {first_line[key]})")
        value = rest[0].strip(" \t") if rest else ""
        if need_value and not value:
            raise TableError(f"{path}:{number}: '{key}' has no value")
        table[key] = value
        first_line[key] = number
    return table
