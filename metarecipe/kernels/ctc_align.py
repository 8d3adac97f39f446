"""CTC Viterbi forced alignment: per target token its frames on the single best CTC path (word timestamps).

The path runs through the usual lattice blank, l1, blank, l2, ..., blank and may skip the blank between two
different labels; the best one maximises the summed log-probabilities (Viterbi: max where the CTC loss takes
logsumexp). Ties are broken the same way on every backend, so that they agree exactly: a state keeps its
predecessor in the order stay, from s - 1, from s - 2 (a later one only when strictly greater), and the path
ends in the final blank unless the last label scores strictly higher. With equal scores everywhere the path
thus advances at every frame up to the last token and then stays in the final blank.

Backends: ``cpp`` (``csrc/ctc_align_cpu.cpp``), ``numba`` (``ctc_align_numba``) and ``torch``
(``ctc_align_reference``, float64, any device: what the tests compare against).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarecipe.kernels.backends import extension, select_backend
from metarecipe.kernels.ctc_loss import checked_lengths, int64_cpu
from metarecipe.kernels.ctc_reference import extended_targets

OFFERED = ("cpp", "numba", "torch")
STAY, FROM_PREVIOUS, FROM_SKIP = 0, 1, 2  # how a state was entered: from state s - choice


@dataclass
class CTCAlignment:
    """Per token its run of frames on the best path. Padding positions (beyond target_lengths) and utterances
    without a finite path hold -1 in starts and ends and 0 in token_scores."""

    starts: torch.Tensor  # (B, U) int64: first frame of the token's run
    ends: torch.Tensor  # (B, U) int64: one past the last frame of its run
    token_scores: torch.Tensor  # (B, U) float32: mean log-prob of the token over its run, a confidence
    path_scores: torch.Tensor  # (B,) float64: log-prob of the best path, blank frames included; -inf: none


def ctc_forced_align(log_probs: torch.Tensor, lengths, targets: torch.Tensor, target_lengths, blank: int = 0,
                     backend: str | None = None) -> CTCAlignment:
    """Best CTC path of each target sequence: log_probs (B, T, V) float32 | float64, lengths (B,), targets
    (B, U) padded, target_lengths (B,). ``backend``: None for the fastest here, or "cpp", "numba", "torch".
    An utterance needs at least U_b frames plus one per pair of equal neighbours; with fewer (or with no path
    of finite score) its path score is -inf."""
    log_probs, lengths, targets, target_lengths = _validated(log_probs, lengths, targets, target_lengths, blank)
    name = select_backend("ctc_forced_align", log_probs.device, backend, offered=OFFERED)
    if name == "torch":
        return CTCAlignment(*ctc_align_reference(log_probs, lengths.to(log_probs.device),
                                                 targets.to(log_probs.device),
                                                 target_lengths.to(log_probs.device), blank))
    if name == "cpp":
        found = extension().ctc_forced_align(log_probs=log_probs, lengths=lengths, targets=targets,
                                             target_lengths=target_lengths, blank=blank)
        return CTCAlignment(*found)
    from metarecipe.kernels.ctc_align_numba import forced_align

    return CTCAlignment(*forced_align(log_probs, lengths, targets, target_lengths, blank))


def _validated(log_probs, lengths, targets, target_lengths, blank):
    """Checks every argument (ValueError naming it); returns log_probs contiguous and the integer arguments as
    int64 CPU tensors, targets (B, U) with padding set to blank."""
    if not isinstance(log_probs, torch.Tensor) or log_probs.dtype not in (torch.float32, torch.float64):
        dtype = getattr(log_probs, "dtype", type(log_probs).__name__)
        raise ValueError(f"log_probs must be a float32 or float64 tensor, got {dtype}")
    if log_probs.dim() != 3 or log_probs.shape[2] == 0:
        raise ValueError(f"log_probs must be (B, T, V) with V >= 1, got shape {tuple(log_probs.shape)}")
    batch, frames, vocab = log_probs.shape
    if torch.isnan(log_probs.sum()) and torch.isnan(log_probs).any():  # the sum is 10x cheaper than isnan
        b, t, v = (int(x) for x in torch.isnan(log_probs).nonzero()[0])
        raise ValueError(f"log_probs[{b}, {t}, {v}] is NaN")
    if not isinstance(blank, int) or not 0 <= blank < vocab:
        raise ValueError(f"blank must be an int in [0, {vocab}), got {blank!r}")
    lengths = checked_lengths(lengths, "lengths", batch)
    target_lengths = checked_lengths(target_lengths, "target_lengths", batch)
    if batch and int(lengths.max()) > frames:
        i = int(torch.argmax(lengths))
        raise ValueError(f"lengths[{i}] = {int(lengths[i])} exceeds the {frames} frames of log_probs")
    targets = int64_cpu(targets, "targets", "integer labels")
    if targets.dim() != 2 or targets.shape[0] != batch:
        raise ValueError(f"targets must be (B, U) = ({batch}, U) padded, got shape {tuple(targets.shape)}")
    if batch and int(target_lengths.max()) > targets.shape[1]:
        i = int(torch.argmax(target_lengths))
        raise ValueError(f"target_lengths[{i}] = {int(target_lengths[i])} exceeds the {targets.shape[1]} columns "
                         "of targets")
    valid = torch.arange(targets.shape[1]) < target_lengths.unsqueeze(1)
    bad = valid & ((targets < 0) | (targets >= vocab) | (targets == blank))
    if bool(bad.any()):
        b, j = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"targets[{b}][{j}] = {int(targets[b, j])} is not a label: labels lie in [0, {vocab}) and "
                         f"differ from blank={blank}")
    targets = torch.where(valid, targets, torch.full_like(targets, blank)).contiguous()
    return log_probs.detach().contiguous(), lengths, targets, target_lengths


def ctc_align_reference(log_probs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                        target_lengths: torch.Tensor, blank: int):
    """Plain-torch Viterbi alignment in float64, vectorised over the batch and the states, looping over frames;
    the tie-breaking of the module docstring. Arguments as ``metarecipe._C.ctc_forced_align``, on any one
    device; returns (starts, ends, token_scores, path_scores) as CTCAlignment's fields."""
    batch, frames, _ = log_probs.shape
    width, device = targets.shape[1], log_probs.device
    labels, skip = extended_targets(targets, blank)  # (B, S)
    num_states = labels.shape[1]
    emit = log_probs.double().gather(2, labels.unsqueeze(1).expand(batch, frames, num_states))  # (B, T, S)
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float64, device=device)
    delta = torch.full((batch, num_states), float("-inf"), dtype=torch.float64, device=device)
    delta[:, 0] = 0.0  # a virtual frame -1 in state 0 lets frame 0 enter states 0 and 1
    pad = torch.full((batch, 2), float("-inf"), dtype=torch.float64, device=device)
    choice = torch.zeros(frames, batch, num_states, dtype=torch.int8, device=device)
    for t in range(frames):
        shifted = torch.cat([pad, delta], dim=1)
        best, how = delta, torch.full_like(choice[t], STAY)
        for source, step in ((shifted[:, 1:-1], FROM_PREVIOUS), (torch.where(skip, shifted[:, :-2], neg_inf),
                                                                 FROM_SKIP)):
            better = source > best
            best, how = torch.where(better, source, best), torch.where(better, step, how)
        delta = torch.where((t < lengths).unsqueeze(1), best + emit[:, t], delta)
        choice[t] = how
    last = (2 * target_lengths).unsqueeze(1)
    end_blank = delta.gather(1, last).squeeze(1)
    end_label = torch.where(target_lengths > 0, delta.gather(1, (last - 1).clamp(min=0)).squeeze(1), neg_inf)
    state = torch.where(end_label > end_blank, last.squeeze(1) - 1, last.squeeze(1))  # (B,)
    path_scores = torch.maximum(end_label, end_blank)
    found = path_scores > float("-inf")
    path = torch.full((batch, frames), -1, dtype=torch.int64, device=device)  # (B, T) state of each frame
    for t in range(frames - 1, -1, -1):
        active = (t < lengths) & found
        path[:, t] = torch.where(active, state, -1)
        state = torch.where(active, state - choice[t].gather(1, state.unsqueeze(1)).squeeze(1).long(), state)
    return (*_spans(path, emit, width), path_scores)


def _spans(path: torch.Tensor, emit: torch.Tensor, width: int):
    """(starts, ends, token_scores) (B, U) from the state of each frame on the path (B, T) (-1: none) and the
    log-prob of each state at each frame emit (B, T, S)."""
    batch, frames = path.shape
    on_label = (path >= 0) & (path % 2 == 1)
    column = torch.where(on_label, path // 2, width)  # label j sits in state 2j + 1; column U collects the rest
    frame = torch.arange(frames, device=path.device).expand(batch, frames)
    starts = torch.full((batch, width + 1), frames, dtype=torch.int64, device=path.device)
    starts = starts.scatter_reduce(1, column, frame, "amin")[:, :width]
    ends = torch.full((batch, width + 1), -1, dtype=torch.int64, device=path.device)
    ends = ends.scatter_reduce(1, column, frame + 1, "amax")[:, :width]
    emitted = torch.where(on_label, emit.gather(2, path.clamp(min=0).unsqueeze(2)).squeeze(2), 0.0)
    sums = torch.zeros(batch, width + 1, dtype=torch.float64, device=path.device).scatter_add(1, column, emitted)
    seen = ends > 0
    starts = torch.where(seen, starts, -1)
    token_scores = torch.where(seen, sums[:, :width] / (ends - starts).clamp(min=1), 0.0).float()
    return starts, ends, token_scores
