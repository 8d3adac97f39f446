"""Task-batched layers: every op runs N tasks at once from stacked per-task parameters (leading dimension N).

Inputs carry the task dimension first: activations (N, B, T, D), parameters (N, ...). Written in plain torch
ops, so autograd differentiates them to any order (MAML's second order included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(N, B, T, I) x weight (N, I, O) + bias (N, O) -> (N, B, T, O)."""
    n, b, t, i = x.shape
    out = torch.bmm(x.reshape(n, b * t, i), weight).reshape(n, b, t, -1)
    return out if bias is None else out + bias[:, None, None, :]


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dimension with per-task gain and bias (N, D): (N, B, T, D) -> same."""
    normed = F.layer_norm(x, x.shape[-1:], eps=eps)
    return normed * weight[:, None, None, :] + bias[:, None, None, :]


def conv2d_stride2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """3x3 convolution with stride 2, no padding, per task through a grouped convolution.

    x (N, B, C_in, T, F), weight (N, C_out, C_in, 3, 3), bias (N, C_out) -> (N, B, C_out, T', F')."""
    n, b, c_in, t, f = x.shape
    c_out = weight.shape[1]
    grouped = x.permute(1, 0, 2, 3, 4).reshape(b, n * c_in, t, f)
    out = F.conv2d(grouped, weight.reshape(n * c_out, c_in, 3, 3), bias.reshape(n * c_out), stride=2, groups=n)
    return out.reshape(b, n, c_out, *out.shape[-2:]).permute(1, 0, 2, 3, 4)


def subsampled_lengths(lengths: torch.Tensor, times: int = 2) -> torch.Tensor:
    """Frames left after `times` 3x3 stride-2 unpadded convolutions."""
    for _ in range(times):
        lengths = torch.div(lengths - 3, 2, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


def gru_direction(x: torch.Tensor, lengths: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                  b_ih: torch.Tensor, b_hh: torch.Tensor, reverse: bool) -> torch.Tensor:
    """One direction of a GRU (PyTorch's gate order r, z, n) over N tasks at once.

    x (N, B, T, I), lengths (N, B), w_ih (N, I, 3H), w_hh (N, H, 3H), b_ih and b_hh (N, 3H) ->
    outputs (N, B, T, H), zero past each length; a reversed direction starts at each sequence's last frame."""
    n, b, t, _ = x.shape
    hidden = w_hh.shape[1]
    gates_x = linear(x, w_ih, b_ih)  # (N, B, T, 3H): input projections of every frame at once
    h = x.new_zeros(n, b, hidden)
    outputs = [None] * t
    for step in (range(t - 1, -1, -1) if reverse else range(t)):
        gx = gates_x[:, :, step]
        gh = torch.bmm(h, w_hh) + b_hh[:, None, :]
        r = torch.sigmoid(gx[..., :hidden] + gh[..., :hidden])
        z = torch.sigmoid(gx[..., hidden:2 * hidden] + gh[..., hidden:2 * hidden])
        cand = torch.tanh(gx[..., 2 * hidden:] + r * gh[..., 2 * hidden:])
        new = (1 - z) * cand + z * h
        valid = (step < lengths).unsqueeze(-1)
        h = torch.where(valid, new, h)
        outputs[step] = torch.where(valid, new, torch.zeros_like(new))
    return torch.stack(outputs, dim=2)
