"""The task-batched GRU recurrence, twice differentiable on every backend.

``gru_recurrence`` runs one GRU direction for N tasks at once from stacked per-task recurrent weights. Its
backward is an autograd Function of its own whose backward (the double backward) is written out, so MAML's
second order costs two extra sweeps over time instead of a graph node per op and step. Backends: ``cpp``
(csrc/gru_cpu.cpp, fused per-step loops) and ``torch`` (the same sweeps in torch ops, any device); the
op-by-op reference is ``gru_reference.gru_recurrence``. ``gru_inference`` is one direction for one model without
autograd (compact models): csrc/gru_infer_cpu.cpp, vectorised float32, or the torch sweep.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.autograd.function import once_differentiable

from metarecipe.kernels import backends, gru_reference, gru_torch


def _ops(name: str):
    if name == "cpp":
        ext = backends.extension()
        return SimpleNamespace(forward=ext.gru_forward, backward=ext.gru_backward,
                               double_backward=ext.gru_double_backward)
    return gru_torch


class _GRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gates_x, w, b, valid, reverse, ops):
        out, cache = ops.forward(gates_x, w, b, valid, reverse)
        ctx.save_for_backward(gates_x, w, b, valid, cache)
        ctx.reverse, ctx.ops = reverse, ops
        return out

    @staticmethod
    def backward(ctx, grad_out):
        gates_x, w, b, valid, cache = ctx.saved_tensors
        d_x, d_w, d_b = _GRUBackward.apply(grad_out.contiguous(), gates_x, w, b, valid, cache, ctx.reverse, ctx.ops)
        return d_x, d_w, d_b, None, None, None


class _GRUBackward(torch.autograd.Function):
    """grad_out -> gradients for (gates_x, w, b). gates_x and b are inputs only so that the double backward
    reaches them: the cache already holds what they determine."""

    @staticmethod
    def forward(ctx, grad_out, gates_x, w, b, valid, cache, reverse, ops):
        d_x, d_w, d_b, gbar = ops.backward(grad_out, w, valid, cache, reverse)
        ctx.save_for_backward(w, valid, cache, gbar)
        ctx.reverse, ctx.ops = reverse, ops
        return d_x, d_w, d_b

    @staticmethod
    @once_differentiable
    def backward(ctx, v_x, v_w, v_b):
        w, valid, cache, gbar = ctx.saved_tensors
        contiguous = [None if v is None else v.contiguous() for v in (v_x, v_w, v_b)]
        cot_out, cot_x, cot_w, cot_b = ctx.ops.double_backward(*contiguous, w, valid, cache, gbar, ctx.reverse)
        return cot_out, cot_x, cot_w, cot_b, None, None, None, None


def gru_recurrence(gates_x: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, valid: torch.Tensor,
                   reverse: bool = False, backend: str | None = None) -> torch.Tensor:
    """One GRU direction (PyTorch's gate order r, z, n) over precomputed input gates, N tasks at once.

    gates_x (T, N, B, 3H), w_hh (N, H, 3H), b_hh (N, 3H), valid (T, N, B) 1.0 within each sequence, 0.0 on
    padding -> outputs (T, N, B, H), zero on padding, which leaves the hidden state as it was (a reversed
    direction starts at each sequence's last frame). Differentiable twice. ``backend``: None for the fastest,
    else "cpp", "torch", or "reference" (op by op, to any order and under torch.func transforms)."""
    hidden = w_hh.shape[-2]
    if gates_x.dim() != 4 or gates_x.shape[-1] != 3 * hidden or w_hh.shape[-1] != 3 * hidden:
        raise ValueError(f"gates_x (T, N, B, 3H) and w_hh (N, H, 3H) disagree: {tuple(gates_x.shape)} and "
                         f"{tuple(w_hh.shape)}")
    if valid.shape != gates_x.shape[:3]:
        raise ValueError(f"valid must have shape {tuple(gates_x.shape[:3])}, got {tuple(valid.shape)}")
    if backend == "reference":
        return gru_reference.gru_recurrence(gates_x, w_hh, b_hh, valid.to(gates_x.dtype), reverse)
    name = backends.select_backend("gru", gates_x.device, backend, offered=("cpp", "torch"))
    w_hh, b_hh = w_hh.contiguous(), b_hh.contiguous()
    return _GRU.apply(gates_x.contiguous(), w_hh, b_hh, valid.to(gates_x.dtype).contiguous(), reverse, _ops(name))


def gru_inference(gates_x: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, valid: torch.Tensor,
                  reverse: bool = False, backend: str | None = None) -> torch.Tensor:
    """One GRU direction of one model, for inference: gates_x (T, B, 3H), w_hh (H, 3H), b_hh (3H), valid (T, B)
    -> outputs (T, B, H), as gru_recurrence for N = 1. ``backend``: None for the fastest, "cpp" (float32 CPU
    tensors) or "torch"."""
    name = backends.select_backend("gru_inference", gates_x.device, backend, offered=("cpp", "torch"))
    if name == "cpp" and gates_x.dtype == torch.float32:
        return backends.extension().gru_infer(gates_x.contiguous(), w_hh.contiguous(), b_hh.contiguous(),
                                              valid.to(torch.float32).contiguous(), reverse)
    with torch.no_grad():
        return gru_recurrence(gates_x.unsqueeze(1), w_hh.unsqueeze(0), b_hh.unsqueeze(0), valid.unsqueeze(1),
                              reverse, backend="torch")[:, 0]
