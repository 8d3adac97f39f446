"""Task-batched layers: every op runs N tasks at once from stacked per-task parameters (leading dimension N).

Inputs carry the task dimension first: activations (N, B, T, D), parameters (N, ...). Plain torch ops and the
GRU kernel (metarecipe.kernels.gru), all differentiable twice (MAML's second order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metarecipe.kernels.gru import gru_recurrence


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
                  b_ih: torch.Tensor, b_hh: torch.Tensor, reverse: bool, backend: str | None = None) -> torch.Tensor:
    """One direction of a GRU (PyTorch's gate order r, z, n) over N tasks at once, twice differentiable.

    x (N, B, T, I), lengths (N, B), w_ih (N, I, 3H), w_hh (N, H, 3H), b_ih and b_hh (N, 3H) ->
    outputs (N, B, T, H), zero past each length; a reversed direction starts at each sequence's last frame.
    backend: of the recurrence kernel (metarecipe.kernels.gru)."""
    t = x.shape[2]
    gates_x = linear(x, w_ih, b_ih).permute(2, 0, 1, 3)  # (T, N, B, 3H): every frame's input projection at once
    valid = (torch.arange(t, device=x.device)[:, None, None] < lengths.unsqueeze(0)).to(x.dtype)  # (T, N, B)
    return gru_recurrence(gates_x, w_hh, b_hh, valid, reverse, backend).permute(1, 2, 0, 3)
