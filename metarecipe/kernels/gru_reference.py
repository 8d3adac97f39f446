"""Plain-torch GRU recurrence over N tasks: the reference implementation.

Each step written with differentiable torch ops, so autograd differentiates it to any order on any device. It
records a graph node per op and step, and is what the compiled and swept backends are tested against.
"""

from __future__ import annotations

import torch


def gru_recurrence(gates_x: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, valid: torch.Tensor,
                   reverse: bool = False) -> torch.Tensor:
    """GRU over precomputed input gates (PyTorch's gate order r, z, n), time-major.

    gates_x (T, N, B, 3H), w_hh (N, H, 3H), b_hh (N, 3H), valid (T, N, B) 1.0 on frames within each length ->
    outputs (T, N, B, H), zero on padding frames, which leave the hidden state as it was."""
    hidden = w_hh.shape[1]
    h = gates_x.new_zeros(gates_x.shape[1], gates_x.shape[2], hidden)
    outputs = [None] * gates_x.shape[0]
    for step in (range(gates_x.shape[0] - 1, -1, -1) if reverse else range(gates_x.shape[0])):
        gx, m = gates_x[step], valid[step].unsqueeze(-1)
        gh = torch.baddbmm(b_hh.unsqueeze(1), h, w_hh)
        r, z = torch.sigmoid(gx[..., : 2 * hidden] + gh[..., : 2 * hidden]).chunk(2, dim=-1)
        cand = torch.tanh(gx[..., 2 * hidden:] + r * gh[..., 2 * hidden:])
        new = (cand + z * (h - cand)) * m
        outputs[step] = new
        h = new + h * (1 - m)
    return torch.stack(outputs)
