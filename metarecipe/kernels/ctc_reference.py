"""Plain-torch CTC loss: the reference implementation.

The alpha recursion in log space written with differentiable torch ops, vectorised over the batch and the
lattice states, looping over frames. Autograd differentiates it to any order on any device; it is slow, and
it is what the compiled backends are tested against. It also serves the rare samples whose dynamic range
defeats the scaled recursions of the fast backends.
"""

from __future__ import annotations

import torch


def _logsumexp(stacked: torch.Tensor) -> torch.Tensor:
    """log(sum(exp(x))) over dim 0 whose value and derivatives of every order stay finite when all inputs
    are -inf (the result is then -inf and the derivatives 0)."""
    shift = stacked.max(dim=0).values.detach()
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    total = torch.exp(stacked - shift).sum(dim=0)
    positive = total > 0
    safe = torch.where(positive, total, torch.ones_like(total))
    neg_inf = torch.full_like(total, float("-inf"))
    return torch.where(positive, torch.log(safe) + shift, neg_inf)


def extended_targets(targets: torch.Tensor, blank: int):
    """Lattice of each sample: labels (B, 2S+1) as blank, l1, blank, ..., and skip (B, 2S+1), True where a
    state may be entered from two states back (a label differing from the label before it)."""
    batch, max_len = targets.shape
    labels = torch.full((batch, 2 * max_len + 1), blank, dtype=torch.long, device=targets.device)
    labels[:, 1::2] = targets
    skip = torch.zeros_like(labels, dtype=torch.bool)
    if max_len > 1:
        skip[:, 3::2] = targets[:, 1:] != targets[:, :-1]
    return labels, skip


def ctc_losses(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
               target_lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """Per-sample negative log-likelihood -log Z (B,), +inf where no alignment exists.

    log_probs (T >= 1, B, V) any real values (no normalisation assumed); targets (B, S) padded;
    input_lengths, target_lengths (B,) int64 on the device of log_probs.
    """
    num_frames, batch, _ = log_probs.shape
    labels, skip = extended_targets(targets, blank)
    num_states = labels.shape[1]
    emit = log_probs.gather(2, labels.unsqueeze(0).expand(num_frames, -1, -1))  # (T, B, 2S+1)
    neg_inf = torch.tensor(float("-inf"), dtype=log_probs.dtype, device=log_probs.device)
    state = torch.arange(num_states, device=log_probs.device)
    alpha = torch.where(state < 2, emit[0], neg_inf)  # (B, 2S+1)
    pad = torch.full((batch, 2), float("-inf"), dtype=log_probs.dtype, device=log_probs.device)
    for t in range(1, num_frames):
        shifted = torch.cat([pad, alpha], dim=1)
        from_prev = shifted[:, 1:-1]
        from_skip = torch.where(skip, shifted[:, :-2], neg_inf)
        stepped = _logsumexp(torch.stack([alpha, from_prev, from_skip])) + emit[t]
        alpha = torch.where((t < input_lengths).unsqueeze(1), stepped, alpha)
    last = (2 * target_lengths).unsqueeze(1)
    end_blank = alpha.gather(1, last).squeeze(1)
    end_label = alpha.gather(1, (last - 1).clamp(min=0)).squeeze(1)
    end_label = torch.where(target_lengths > 0, end_label, neg_inf)
    log_z = _logsumexp(torch.stack([end_blank, end_label]))
    # An empty input aligns only to an empty target.
    empty = input_lengths == 0
    zero = torch.zeros_like(log_z)
    log_z = torch.where(empty, torch.where(target_lengths == 0, zero, neg_inf.expand_as(log_z)), log_z)
    return -log_z
