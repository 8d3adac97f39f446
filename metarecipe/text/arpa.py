"""ARPA back-off language model files: written as KenLM's lmplz does, read from us, KenLM or SRILM.

An ARPA file lists, per order n, ``log10-prob  w1 .. wn  [log10-backoff]`` lines under ``\\n-grams:``, after a
``\\data\\`` header of ``ngram n=count`` lines and before ``\\end\\``. Fields are separated by tabs or spaces,
blank lines and text before ``\\data\\`` are ignored, a missing backoff is 0.0, and ``.gz`` files are
(de)compressed on the fly.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

from metarecipe.errors import InputError
from metarecipe.io.atomic import atomic_path

UNK_MISSING_LOG10 = -100.0  # KenLM's probability for <unk> when an ARPA file lacks it
_NGRAM_COUNT = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION = re.compile(r"\\(\d+)-grams:$")

Table = dict[tuple[int, ...], tuple[float, float]]


class ArpaError(InputError, ValueError):
    """A malformed ARPA file; the message names the file and the line."""


def _open(path: Path, mode: str, compressed: bool):
    if compressed:
        return gzip.open(path, mode + "t", compresslevel=6, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def write_arpa(path: str | os.PathLike, vocab: list[str], ngrams: list[Table]) -> None:
    """Writes the tables (ids into `vocab`) with 8 significant digits, through a temporary file."""
    path = Path(path)
    with atomic_path(path) as tmp, _open(tmp, "w", compressed=path.suffix == ".gz") as out:
        out.write("\n\\data\\\n" + "".join(f"ngram {n}={len(table)}\n" for n, table in enumerate(ngrams, 1)))
        for n, table in enumerate(ngrams, 1):
            out.write(f"\n\\{n}-grams:\n")
            if n == len(ngrams):
                out.writelines(f"{p:.8g}\t{' '.join(vocab[i] for i in gram)}\n" for gram, (p, _) in table.items())
            else:
                out.writelines(f"{p:.8g}\t{' '.join(vocab[i] for i in gram)}\t{b:.8g}\n"
                               for gram, (p, b) in table.items())
        out.write("\n\\end\\\n")


def _content_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) of every non-blank line; ArpaError naming the file (and line) when it cannot
    be read, decompressed or decoded as UTF-8."""
    number = 0
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as lines:
            for number, raw in enumerate(lines, 1):
                line = raw.decode("utf-8").strip()
                if line:
                    yield number, line
    except UnicodeDecodeError as err:
        raise ArpaError(f"{path}:{number}: not UTF-8 ({err.reason} at byte {err.start} of the line)") from None
    except (OSError, EOFError, zlib.error) as err:
        raise ArpaError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from None


def _next(path: Path, lines: Iterator[tuple[int, str]], last: int, expected: str) -> tuple[int, str]:
    try:
        return next(lines)
    except StopIteration:
        raise ArpaError(f"{path}:{last}: the file ends where {expected} should come") from None


def _read_header(path: Path, lines: Iterator[tuple[int, str]]) -> tuple[list[int], tuple[int, str]]:
    """The declared count per order, then the first line after the header."""
    number, line = 0, ""
    while line != "\\data\\":
        number, line = _next(path, lines, number, "\\data\\")
    counts = []
    number, line = _next(path, lines, number, "'ngram 1=COUNT'")
    while not line.startswith("\\"):
        match = _NGRAM_COUNT.match(line)
        if not match or int(match[1]) != len(counts) + 1:
            raise ArpaError(f"{path}:{number}: expected 'ngram {len(counts) + 1}=COUNT', got '{line}'")
        counts.append(int(match[2]))
        number, line = _next(path, lines, number, "\\1-grams:")
    if not counts:
        raise ArpaError(f"{path}:{number}: no 'ngram n=COUNT' lines after \\data\\")
    return counts, (number, line)


def _parse_entry(path: Path, number: int, line: str, n: int) -> tuple[float, list[str], float]:
    fields = line.split()
    if len(fields) not in (n + 1, n + 2):
        raise ArpaError(f"{path}:{number}: expected a log10 probability, {n} word(s) and an optional backoff, "
                        f"got '{line}'")
    try:
        return float(fields[0]), fields[1:n + 1], float(fields[n + 1]) if len(fields) == n + 2 else 0.0
    except ValueError:
        raise ArpaError(f"{path}:{number}: a log10 probability or backoff is not a number in '{line}'") from None


def _read_section(path: Path, lines: Iterator[tuple[int, str]], n: int, expected: int, header: tuple[int, str],
                  word_ids: dict[str, int]) -> tuple[Table, tuple[int, str]]:
    """The n-grams of one section (new unigrams go into `word_ids`), then the line after the section."""
    number, line = header
    match = _SECTION.match(line)
    if not match or int(match[1]) != n:
        raise ArpaError(f"{path}:{number}: expected \\{n}-grams:, got '{line}'")
    table: Table = {}
    number, line = _next(path, lines, number, f"the {n}-grams")
    while not line.startswith("\\"):
        prob, words, backoff = _parse_entry(path, number, line, n)
        if n == 1 and words[0] not in word_ids:
            word_ids[words[0]] = len(word_ids)
        try:
            gram = tuple(word_ids[w] for w in words)
        except KeyError as err:
            raise ArpaError(f"{path}:{number}: the word {err} is not among the 1-grams") from None
        if gram in table:
            raise ArpaError(f"{path}:{number}: '{' '.join(words)}' is listed twice")
        table[gram] = (prob, backoff)
        number, line = _next(path, lines, number, "\\end\\")
    if len(table) != expected:
        raise ArpaError(f"{path}:{header[0]}: {len(table)} {n}-grams, but the header says ngram {n}={expected}")
    return table, (number, line)


def read_arpa(path: str | os.PathLike) -> tuple[list[str], list[Table]]:
    """The vocabulary (unigram order) and the n-gram tables of an ARPA file.

    Like KenLM, <unk> is added with log10 probability -100 when the file lacks it; <s> and </s> must be there.
    """
    path = Path(path)
    word_ids: dict[str, int] = {}
    ngrams = []
    with closing(_content_lines(path)) as lines:
        counts, (number, line) = _read_header(path, lines)
        for n, expected in enumerate(counts, 1):
            table, (number, line) = _read_section(path, lines, n, expected, (number, line), word_ids)
            ngrams.append(table)
    if line != "\\end\\":
        raise ArpaError(f"{path}:{number}: expected \\end\\ after the {len(counts)}-grams, got '{line}'")
    missing = [w for w in ("<s>", "</s>") if w not in word_ids]
    if missing:
        raise ArpaError(f"{path}: no {' or '.join(missing)} among the 1-grams")
    if "<unk>" not in word_ids:
        word_ids["<unk>"] = len(word_ids)
        ngrams[0][(word_ids["<unk>"],)] = (UNK_MISSING_LOG10, 0.0)
    return list(word_ids), ngrams
