"""Greedy (best-path) CTC decoding."""

from __future__ import annotations

import torch


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """The collapsed argmax path of each utterance: log_probs (B, T, V), lengths (B,) -> B label lists
    (repeats merged, then blanks removed)."""
    best = log_probs.argmax(dim=-1).cpu()
    hyps = []
    for path, length in zip(best, lengths.tolist(), strict=True):
        path = path[:length]
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        hyps.append([int(t) for t in path[keep] if t != blank])
    return hyps
