"""Symmetric per-output-channel int8 quantization of weight matrices."""

from __future__ import annotations

import torch

# the linear and recurrent weights stored in int8; convolutions, biases and LayerNorm stay float32
INT8_SUFFIXES = ("proj_weight", "head_weight", "_w_ih", "_w_hh")


def is_quantized_weight(name: str) -> bool:
    return name.endswith(INT8_SUFFIXES)


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (..., out) -> int8 values of the same shape and scales (out,): weight ~ values * scales, with
    |values| <= 127 and the largest magnitude of each output channel mapped to 127 (all-zero channels: scale 1)."""
    amax = weight.detach().abs().reshape(-1, weight.shape[-1]).amax(0)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax)).float()
    values = torch.round(weight.detach() / scale).clamp(-127, 127).to(torch.int8)
    return values, scale
