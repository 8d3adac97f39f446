"""Levenshtein alignment of a hypothesis to a reference, with jiwer's (rapidfuzz's) choice among tied alignments.

Among alignments of equal cost, jiwer 4 reports the one of ``rapidfuzz.distance.Levenshtein.editops``, and the
split into substitutions, insertions and deletions depends on that choice ("a b" -> "b a" is one insertion and one
deletion there, not two substitutions). The rule, reproduced here on our own dynamic programme:

1. a common prefix and a common suffix are matched first and left out of the table;
2. the backtrace from the end prefers, at cell (i, j) of the table D (i over ref, j over hyp):
   a deletion when D[i, j] == D[i-1, j] + 1; else an insertion when D[i, j-1] == D[i-1, j-1] - 1;
   else the diagonal (a match or a substitution).

These are the two bits (VP, VN) of Hyyrö's bit-parallel table that rapidfuzz keeps. rapidfuzz switches to
Hirschberg's algorithm above about four million table cells (utterances of thousands of tokens with thousands of
errors); there its tie choices, and so possibly its split of the errors, may differ from ours. Totals never differ.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numba
import numpy as np

OPS = "CSID"  # op codes 0..3: correct, substitution, insertion, deletion
_C, _S, _I, _D = range(4)
_UP, _DOWN = 1, 2  # flags of a cell: D[i, j] - D[i-1, j] is +1 / -1


@numba.njit(cache=True, nogil=True)
def _delta_flags(ref, hyp):
    """(n + 1, m + 1) uint8 flags of the edit-distance table: _UP / _DOWN where D[i, j] - D[i-1, j] is +1 / -1."""
    n, m = ref.shape[0], hyp.shape[0]
    flags = np.zeros((n + 1, m + 1), np.uint8)
    prev = np.arange(n + 1)  # D[:, j - 1]
    cur = np.empty(n + 1, np.int64)
    flags[1:, 0] = _UP
    for j in range(1, m + 1):
        cur[0] = j
        for i in range(1, n + 1):
            cost = prev[i - 1] + (ref[i - 1] != hyp[j - 1])
            cur[i] = min(cost, prev[i] + 1, cur[i - 1] + 1)
            step = cur[i] - cur[i - 1]
            flags[i, j] = _UP if step == 1 else (_DOWN if step == -1 else 0)
        prev, cur = cur, prev
    return flags


@numba.njit(cache=True, nogil=True)
def _affix_lengths(ref, hyp):
    """(prefix, suffix): lengths of the common prefix and of the common suffix after it."""
    shorter = min(ref.shape[0], hyp.shape[0])
    prefix = 0
    while prefix < shorter and ref[prefix] == hyp[prefix]:
        prefix += 1
    suffix = 0
    while suffix < shorter - prefix and ref[ref.shape[0] - 1 - suffix] == hyp[hyp.shape[0] - 1 - suffix]:
        suffix += 1
    return prefix, suffix


@numba.njit(cache=True, nogil=True)
def edit_ops(ref, hyp):
    """Op codes (int8, values index OPS) of the chosen alignment of int64 arrays ref (n,) and hyp (m,), in order."""
    prefix, suffix = _affix_lengths(ref, hyp)
    core_ref = ref[prefix:ref.shape[0] - suffix]
    core_hyp = hyp[prefix:hyp.shape[0] - suffix]
    flags = _delta_flags(core_ref, core_hyp)
    backwards = np.empty(ref.shape[0] + hyp.shape[0], np.int8)
    k = 0
    for _ in range(suffix):
        backwards[k] = _C
        k += 1
    i, j = core_ref.shape[0], core_hyp.shape[0]
    while i > 0 and j > 0:
        if flags[i, j] == _UP:
            backwards[k] = _D
            i -= 1
        elif flags[i, j - 1] == _DOWN:
            backwards[k] = _I
            j -= 1
        else:
            backwards[k] = _C if core_ref[i - 1] == core_hyp[j - 1] else _S
            i -= 1
            j -= 1
        k += 1
    for _ in range(i):
        backwards[k] = _D
        k += 1
    for _ in range(j):
        backwards[k] = _I
        k += 1
    for _ in range(prefix):
        backwards[k] = _C
        k += 1
    return backwards[:k][::-1].copy()


def encode(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Both sequences as int64 arrays (n,), (m,), equal tokens to equal ints: code points for two strings."""
    if isinstance(ref, str) and isinstance(hyp, str):
        return (np.frombuffer(ref.encode("utf-32-le"), np.uint32).astype(np.int64),
                np.frombuffer(hyp.encode("utf-32-le"), np.uint32).astype(np.int64))
    ids: dict[Hashable, int] = {}
    return (np.array([ids.setdefault(t, len(ids)) for t in ref], np.int64),
            np.array([ids.setdefault(t, len(ids)) for t in hyp], np.int64))


def op_codes(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> np.ndarray:
    """Op codes (int8 array, values index OPS) of jiwer's alignment of hyp to ref."""
    return edit_ops(*encode(ref, hyp))


def align(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> list[tuple[Hashable | None, Hashable | None, str]]:
    """jiwer's alignment as (ref token or None, hyp token or None, op) with op in "C", "S", "I", "D"."""
    pairs = []
    i = j = 0
    for code in op_codes(ref, hyp):
        op = OPS[code]
        pairs.append((ref[i] if op != "I" else None, hyp[j] if op != "D" else None, op))
        i += op != "I"
        j += op != "D"
    return pairs
