"""Error rates by Levenshtein alignment: substitutions, insertions and deletions, summed over utterances."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


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
    """A minimum-edit alignment of hyp to ref, as counts (ties broken towards substitutions)."""
    # cost[j] = (total, sub, ins, del) aligning ref[:i] with hyp[:j]
    prev = [(j, 0, j, 0) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, 0, i)]
        for j in range(1, len(hyp) + 1):
            same = ref[i - 1] == hyp[j - 1]
            diag = prev[j - 1]
            options = [(diag[0] + (not same), diag[1] + (not same), diag[2], diag[3]),
                       (cur[j - 1][0] + 1, cur[j - 1][1], cur[j - 1][2] + 1, cur[j - 1][3]),
                       (prev[j][0] + 1, prev[j][1], prev[j][2], prev[j][3] + 1)]
            cur.append(min(options, key=lambda c: c[0]))
        prev = cur
    _, sub, ins, dels = prev[-1]
    return ErrorCounts(sub, ins, dels, len(ref))


def error_rate(pairs: Iterable[tuple[Sequence, Sequence]]) -> ErrorCounts:
    """Summed counts over (reference, hypothesis) pairs: strings for CER, word lists for WER."""
    total = ErrorCounts()
    for ref, hyp in pairs:
        total = total + edit_counts(ref, hyp)
    return total
