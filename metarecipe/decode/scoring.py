"""Kaldi-style scoring (compute-wer, wer_per_utt_details.pl, per-speaker tables) with jiwer 4's error counts.

Tokens: "word" scores the whitespace-separated words of a transcript; "char" scores the characters of those words
joined by single spaces, spaces included (jiwer.cer's characters whenever words are separated by single spaces).
Rates are percent of reference tokens. An empty reference scores 0 with no errors and inf with any (jiwer
reports the insertion count there instead of a rate); its counts are jiwer's.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarecipe.decode.alignment import align, op_codes
from metarecipe.io.atomic import write_atomic

MODES = ("present", "all", "strict")
UNIT_NAMES = {"word": "WER", "char": "CER"}
GAP = "***"
SPACE = "<space>"  # a space character, as the per-utterance alignment shows it


@dataclass
class ErrorCounts:
    sub: int = 0
    ins: int = 0
    dels: int = 0
    ref_len: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.ins + self.dels

    @property
    def rate(self) -> float:
        """Errors per reference token, in percent (inf for errors against an empty reference)."""
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return 100.0 * self.errors / self.ref_len

    def summary(self, name: str = "WER") -> str:
        """Kaldi's compute-wer line: %WER 12.34 [ 123 / 997, 10 ins, 20 del, 93 sub ]."""
        return (f"%{name} {self.rate:.2f} [ {self.errors} / {self.ref_len}, {self.ins} ins, {self.dels} del, "
                f"{self.sub} sub ]")

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(self.sub + other.sub, self.ins + other.ins, self.dels + other.dels,
                           self.ref_len + other.ref_len)


def edit_counts(ref: Sequence, hyp: Sequence) -> ErrorCounts:
    """Counts of jiwer's minimum-edit alignment of hyp to ref (sequences of hashable tokens, or two strings)."""
    _, sub, ins, dels = np.bincount(op_codes(ref, hyp), minlength=4).tolist()
    return ErrorCounts(sub, ins, dels, len(ref))


def error_rate(pairs: Iterable[tuple[Sequence, Sequence]]) -> ErrorCounts:
    """Summed counts over (reference, hypothesis) pairs: strings for CER, word lists for WER."""
    total = ErrorCounts()
    for ref, hyp in pairs:
        total = total + edit_counts(ref, hyp)
    return total


def _check_choice(what: str, value: str, choices: Iterable[str]) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got '{value}'")


def tokens(text: str, unit: str) -> Sequence[str]:
    """The scored tokens of a transcript: a list of words, or for "char" a string of characters."""
    _check_choice("unit", unit, UNIT_NAMES)
    words = text.split()
    return words if unit == "word" else " ".join(words)


@dataclass
class UttScore:
    """One utterance: its counts and its alignment [(ref token | None, hyp token | None, op in "CSID")]."""
    counts: ErrorCounts
    alignment: list[tuple[str | None, str | None, str]]

    @classmethod
    def of(cls, ref: Sequence[str], hyp: Sequence[str]) -> UttScore:
        alignment = align(ref, hyp)
        ops = Counter(op for _, _, op in alignment)
        return cls(ErrorCounts(ops["S"], ops["I"], ops["D"], len(ref)), alignment)


@dataclass
class ScoreReport:
    """Scores of a set of utterances; groups[name][key] sums the utterances of each key, group_sizes counts them."""
    unit: str
    total: ErrorCounts
    utts: dict[str, UttScore]
    missing: list[str]
    groups: dict[str, dict[str, ErrorCounts]]
    group_sizes: dict[str, dict[str, int]]

    @property
    def name(self) -> str:
        return UNIT_NAMES[self.unit]

    @property
    def sentence_errors(self) -> int:
        return sum(utt.counts.errors > 0 for utt in self.utts.values())

    @property
    def ser(self) -> float:
        """Sentences with any error, in percent of scored sentences (0 when none was scored)."""
        return 100.0 * self.sentence_errors / len(self.utts) if self.utts else 0.0


def score(refs: dict[str, str], hyps: dict[str, str], unit: str = "word",
          groups: dict[str, dict[str, str]] | None = None, mode: str = "present") -> ScoreReport:
    """Scores hyps against refs (utt -> transcript) the way Kaldi's compute-wer --mode does.

    present: only utterances with a hypothesis are scored; all: a missing hypothesis is scored as empty;
    strict: a missing hypothesis is a ValueError. Hypotheses without a reference are ignored.
    groups: {name: {utt: key}}, e.g. {"spk": utt2spk}; every scored utterance needs a key.
    """
    _check_choice("unit", unit, UNIT_NAMES)
    _check_choice("mode", mode, MODES)
    missing = [utt for utt in refs if utt not in hyps]
    if missing and mode == "strict":
        raise ValueError(f"no hypothesis for utterance '{missing[0]}' (mode strict)")
    utts = {utt: UttScore.of(tokens(ref, unit), tokens(hyps.get(utt, ""), unit))
            for utt, ref in refs.items() if utt in hyps or mode == "all"}
    total = sum((utt.counts for utt in utts.values()), ErrorCounts())
    breakdown, sizes = {}, {}
    for name, utt2key in (groups or {}).items():
        breakdown[name], sizes[name] = _group(utts, utt2key, name)
    return ScoreReport(unit, total, utts, missing, breakdown, sizes)


def _group(utts: dict[str, UttScore], utt2key: dict[str, str], name: str) -> tuple[dict, dict]:
    """({key: summed ErrorCounts}, {key: number of utterances}), keys sorted."""
    counts: dict[str, ErrorCounts] = {}
    sizes: Counter = Counter()
    for utt, result in utts.items():
        if utt not in utt2key:
            raise ValueError(f"utterance '{utt}' has no {name}")
        key = utt2key[utt]
        counts[key] = counts.get(key, ErrorCounts()) + result.counts
        sizes[key] += 1
    return {key: counts[key] for key in sorted(counts)}, {key: sizes[key] for key in sorted(sizes)}


def summary_lines(report: ScoreReport) -> list[str]:
    """compute-wer's output: the %WER (or %CER) line, the %SER line and the count of scored sentences."""
    return [report.total.summary(report.name),
            f"%SER {report.ser:.2f} [ {report.sentence_errors} / {len(report.utts)} ]",
            f"Scored {len(report.utts)} sentences, {len(report.missing)} not present in hyp."]


def _centred(text: str, width: int) -> str:
    """wer_per_utt_details.pl's centring: the odd space goes left."""
    right = (width - len(text)) // 2
    return " " * (width - len(text) - right) + text + " " * right


def _shown(token: str | None) -> str:
    return GAP if token is None else SPACE if token == " " else token


def per_utt_lines(report: ScoreReport) -> list[str]:
    """wer_per_utt_details.pl's layout: ref, hyp and op rows in centred columns, then `utt #csid C S I D`."""
    lines = []
    for utt, result in report.utts.items():
        columns = []
        for ref, hyp, op in result.alignment:
            cells = (_shown(ref), _shown(hyp), op)
            width = max(map(len, cells))
            columns.append([_centred(cell, width) for cell in cells])
        for row, label in enumerate(("ref  ", "hyp  ", "op   ")):
            lines.append(f"{utt} {label}" + "  ".join(column[row] for column in columns))
        c = result.counts
        lines.append(f"{utt} #csid {len(result.alignment) - c.errors} {c.sub} {c.ins} {c.dels}")
    return lines


def group_table_lines(report: ScoreReport, name: str) -> list[str]:
    """A `# header` line, then per key: key, utterances, reference tokens, errors, rate, sub, ins, del."""
    header = [f"# {name}", "utts", "words" if report.unit == "word" else "chars", "errors", f"%{report.name}",
              "sub", "ins", "del"]
    rows = [header] + [[key, str(report.group_sizes[name][key]), str(c.ref_len), str(c.errors), f"{c.rate:.2f}",
                        str(c.sub), str(c.ins), str(c.dels)] for key, c in report.groups[name].items()]
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    return ["  ".join([row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)])
            for row in rows]


def write_lines(path: str | os.PathLike, lines: list[str]) -> None:
    """Writes lines (UTF-8, \\n) to a temporary file beside path, then moves it onto path."""
    write_atomic(Path(path), "".join(line + "\n" for line in lines).encode("utf-8"))


def write_summary(report: ScoreReport, path: str | os.PathLike) -> None:
    write_lines(path, summary_lines(report))


def write_per_utt(report: ScoreReport, path: str | os.PathLike) -> None:
    write_lines(path, per_utt_lines(report))


def write_group_table(report: ScoreReport, name: str, path: str | os.PathLike) -> None:
    write_lines(path, group_table_lines(report, name))
