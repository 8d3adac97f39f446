"""The model's first convolution for inference (compact models): one input channel, 3 x 3, stride 2, ReLU.

Backends ``cpp`` (csrc/conv_infer_cpu.cpp, vectorised rows; general libraries are slow on one input channel)
and ``torch`` (``F.conv2d``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metarecipe.kernels import backends


def conv1_relu(feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               backend: str | None = None) -> torch.Tensor:
    """feats (B, T, F), weight (C, 1, 3, 3), bias (C) -> relu(conv2d(feats as one channel, stride 2))
    (B, C, (T - 3) // 2 + 1, (F - 3) // 2 + 1). ``backend``: None for the fastest, "cpp" (float32 CPU tensors)
    or "torch"."""
    name = backends.select_backend("conv1_relu", feats.device, backend, offered=("cpp", "torch"))
    if name == "cpp" and feats.dtype == torch.float32:
        return backends.extension().conv1_relu_infer(feats.contiguous(), weight.contiguous(), bias.contiguous())
    return torch.relu(F.conv2d(feats.unsqueeze(1), weight, bias, stride=2))
