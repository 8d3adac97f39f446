"""The task-batched GRU recurrence, twice differentiable on every backend.

``gru_recurrence`` runs one GRU direction for N tasks at once from stacked per-task recurrent weights. Its
backward is an autograd Function of its own whose backward (the double backward) is written out, so MAML's
second order costs two extra sweeps over time instead of a graph node per op and step. Backends: ``cpp``
(csrc/gru_cpu.cpp, fused per-step loops) and ``torch`` (the same sweeps in torch ops, any device); the
op-by-op reference is ``gru_reference.gru_recurrence``. ``gru_inference`` is one direction for one model without
autograd (compact models): csrc/gru_infer_cpu.cpp, vectorised float32, or the torch sweep.
``gru_inference_int8`` is the same with int8 recurrent weights and an int8 hidden state in the product (AVX-512
VNNI where the CPU has it).
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


class Int8Recurrent:
    """Recurrent weights w_hh (H, 3H) = int8 (H, 3H) * scale (3H) per output channel, packed once for the
    compiled kernel."""

    def __init__(self, int8: torch.Tensor, scale: torch.Tensor):
        if int8.dtype != torch.int8 or int8.dim() != 2 or int8.shape[1] != 3 * int8.shape[0] or \
                scale.shape != (int8.shape[1],):
            raise ValueError(f"int8 recurrent weights must be int8 (H, 3H) with scales (3H), got {int8.dtype} "
                             f"{tuple(int8.shape)} and {tuple(scale.shape)}")
        self.int8, self.scale = int8.contiguous(), scale.float().contiguous()
        ext = backends.extension()
        self.packed = None if ext is None else ext.gru_int8_pack(self.int8)


def cpu_has_vnni() -> bool:
    """Whether the compiled extension runs AVX-512 VNNI on this CPU."""
    ext = backends.extension()
    return ext is not None and ext.cpu_has_vnni()


def gru_inference_int8(gates_x: torch.Tensor, w_hh: Int8Recurrent, b_hh: torch.Tensor, valid: torch.Tensor,
                       reverse: bool = False, backend: str | None = None, vnni: bool | None = None) -> torch.Tensor:
    """gru_inference with int8 recurrent weights: each step quantizes every row of the hidden state to int8
    (scale max|h| / 127, round to nearest), multiplies in integers and rescales. gates_x (T, B, 3H) float32,
    b_hh (3H), valid (T, B) -> outputs (T, B, H). ``backend``: None, "cpp" or "torch" (the same arithmetic in
    torch ops); ``vnni`` (cpp): None uses AVX-512 VNNI where the CPU has it, False the plain loop."""
    name = backends.select_backend("gru_inference_int8", gates_x.device, backend, offered=("cpp", "torch"))
    valid = valid.to(torch.float32).contiguous()
    if name == "cpp":
        use_vnni = cpu_has_vnni() if vnni is None else vnni
        return backends.extension().gru_infer_int8(gates_x.float().contiguous(), w_hh.packed, w_hh.scale,
                                                   b_hh.float().contiguous(), valid, reverse, use_vnni)
    return _gru_int8_torch(gates_x.float(), w_hh, b_hh.float(), valid, reverse)


def _gru_int8_torch(gates_x, w_hh: Int8Recurrent, b_hh, valid, reverse):
    steps, _, three_h = gates_x.shape
    hidden = three_h // 3
    weight = w_hh.int8.float()
    h = gates_x.new_zeros(gates_x.shape[1], hidden)
    out = gates_x.new_empty(steps, gates_x.shape[1], hidden)
    for s in (reversed(range(steps)) if reverse else range(steps)):
        top = h.abs().amax(1, keepdim=True)
        q = torch.round(h * torch.where(top > 0, 127 / top, 0))
        g = (q @ weight) * (top / 127 * w_hh.scale) + b_hh  # integer sums, exact in float32
        x, m = gates_x[s], valid[s].unsqueeze(1)
        r = torch.sigmoid(x[:, :hidden] + g[:, :hidden])
        z = torch.sigmoid(x[:, hidden:2 * hidden] + g[:, hidden:2 * hidden])
        cand = torch.tanh(x[:, 2 * hidden:] + r * g[:, 2 * hidden:])
        out[s] = (cand + z * (h - cand)) * m
        h = h + m * (out[s] - h)
    return out
