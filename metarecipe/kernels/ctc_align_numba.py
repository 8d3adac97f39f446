"""CTC Viterbi forced alignment with numba: the algorithm of ``csrc/ctc_align_cpu.cpp``, ties broken as there
(stay, then from s - 1, then from s - 2; end in the final blank unless the last label is strictly better).
Parallel over the batch with ``prange``; the lattice helpers are those of the CTC loss.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from metarecipe.kernels.ctc_align import FROM_PREVIOUS, FROM_SKIP, STAY
from metarecipe.kernels.ctc_numba import _feasible, _lattice, _window

_jit = numba.njit(cache=True, nogil=True)
_pjit = numba.njit(cache=True, nogil=True, parallel=True)


@_jit
def _align_sample(log_probs, labels, skip, num_frames, starts, ends, token_scores):
    """Best path of one utterance: log_probs (T, V), labels and skip from _lattice. Fills its row of starts,
    ends and token_scores (U,) and returns the path score; -inf (rows untouched) when no path is finite."""
    num_states = labels.shape[0]
    if num_frames == 0:  # feasible: an empty target
        return 0.0
    # delta rows over states with two -inf cells in front: state s is at index s + 2
    prev = np.full(num_states + 2, -np.inf)
    cur = np.full(num_states + 2, -np.inf)
    choice = np.zeros((num_frames, num_states), np.int8)
    prev[2] = 0.0  # a virtual frame -1 in state 0 lets frame 0 enter states 0 and 1
    for t in range(num_frames):
        lo, hi = _window(t, num_frames, num_states)
        for s in range(max(0, lo - 2), lo):  # read by frame t + 1
            cur[s + 2] = -np.inf
        for s in range(lo, hi):
            best, how = prev[s + 2], STAY
            if prev[s + 1] > best:
                best, how = prev[s + 1], FROM_PREVIOUS
            if skip[s] and prev[s] > best:
                best, how = prev[s], FROM_SKIP
            cur[s + 2] = best + np.float64(log_probs[t, labels[s]])
            choice[t, s] = how
        prev, cur = cur, prev
    s = num_states - 1
    if num_states > 1 and prev[s + 1] > prev[s + 2]:
        s -= 1
    score = prev[s + 2]
    if not score > -np.inf:
        return -np.inf
    sums = np.zeros((num_states - 1) // 2)  # per label: its log-probs along the path, last frame first
    for t in range(num_frames - 1, -1, -1):
        if s % 2 == 1:
            j = s // 2
            if ends[j] < 0:
                ends[j] = t + 1
            starts[j] = t
            sums[j] += np.float64(log_probs[t, labels[s]])
        s -= choice[t, s]
    for j in range(sums.shape[0]):
        token_scores[j] = sums[j] / (ends[j] - starts[j])
    return score


@_pjit
def _align_batch(log_probs, lengths, targets, target_lengths, blank, starts, ends, token_scores, path_scores):
    for b in numba.prange(log_probs.shape[0]):
        labels, skip = _lattice(targets[b], target_lengths[b], blank)
        if not _feasible(labels, lengths[b]):
            path_scores[b] = -np.inf
            continue
        path_scores[b] = _align_sample(log_probs[b], labels, skip, lengths[b], starts[b], ends[b], token_scores[b])


def forced_align(log_probs, lengths, targets, target_lengths, blank):
    """Same contract as ``metarecipe._C.ctc_forced_align``: log_probs (B, T, V) float32 | float64 contiguous CPU,
    lengths (B,), targets (B, U), target_lengths (B,) int64 -> (starts (B, U) int64, ends (B, U) int64,
    token_scores (B, U) float32, path_scores (B,) float64)."""
    batch, width = targets.shape
    starts = np.full((batch, width), -1, np.int64)
    ends = np.full((batch, width), -1, np.int64)
    token_scores = np.zeros((batch, width), np.float32)
    path_scores = np.empty(batch, np.float64)
    _align_batch(log_probs.numpy(), lengths.numpy(), targets.numpy(), target_lengths.numpy(), blank, starts, ends,
                 token_scores, path_scores)
    return tuple(torch.from_numpy(a) for a in (starts, ends, token_scores, path_scores))
