"""CTC loss with the true gradient and an exact double backward, on every backend.

``ctc_loss`` takes the arguments of ``torch.nn.functional.ctc_loss`` and adds ``backend``. Unlike torch's, its
gradient is d loss / d log_probs for any log_probs (torch's is only right behind a log_softmax), and it can be
differentiated twice, so MAML can backpropagate through an inner step with ``create_graph=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch.autograd.function import once_differentiable

from metarecipe.kernels import backends
from metarecipe.kernels.ctc_reference import ctc_losses as reference_losses

_REDUCTIONS = ("none", "mean", "sum")


@dataclass
class CTCBatch:
    """Validated inputs in the kernels' layout."""

    log_probs: torch.Tensor  # (T, B, V) float32 | float64, contiguous
    targets: torch.Tensor  # (B, S) int64 padded with blank, S = max target length
    input_lengths: torch.Tensor  # (B,) int64 on the device of log_probs
    target_lengths: torch.Tensor  # (B,) int64 on the device of log_probs
    unbatched: bool


def int64_cpu(value, name: str, what: str) -> torch.Tensor:
    """value as an int64 CPU tensor; ValueError naming it unless it holds integers."""
    tensor = torch.as_tensor(value)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold {what}, got dtype {tensor.dtype}")
    return tensor.to("cpu", torch.int64)


def checked_lengths(value, name: str, batch: int) -> torch.Tensor:
    """Lengths as an int64 CPU tensor (B,), from a tensor, a sequence or (unbatched) an int."""
    tensor = int64_cpu([value] if isinstance(value, int) else value, name, "integers")
    tensor = tensor.reshape(-1) if tensor.dim() == 0 else tensor
    if tensor.dim() != 1 or tensor.numel() != batch:
        raise ValueError(f"{name} must have shape ({batch},) for a batch of {batch}, got {tuple(tensor.shape)}")
    if batch and int(tensor.min()) < 0:
        i = int(torch.argmin(tensor))
        raise ValueError(f"{name}[{i}] = {int(tensor[i])} is negative")
    return tensor


def _padded_targets(targets: torch.Tensor, lengths: torch.Tensor, batch: int, batched: bool) -> torch.Tensor:
    """Targets as a (B, max length) int64 CPU tensor; padding is left as found."""
    targets = int64_cpu(targets, "targets", "integer labels")
    if not batched:
        if targets.dim() != 1:
            raise ValueError(f"targets must be 1-D (S,) for unbatched log_probs (T, V), got {tuple(targets.shape)}")
        targets = targets.unsqueeze(0)
    if targets.dim() == 2:
        if targets.shape[0] != batch:
            raise ValueError(f"targets has {targets.shape[0]} rows but log_probs a batch of {batch}")
        if batch and int(lengths.max()) > targets.shape[1]:
            i = int(torch.argmax(lengths))
            raise ValueError(f"target_lengths[{i}] = {int(lengths[i])} exceeds the {targets.shape[1]} columns of "
                             "targets")
        return targets[:, : int(lengths.max()) if batch else 0]
    if targets.dim() != 1:
        raise ValueError(f"targets must be (B, S) padded or 1-D concatenated, got shape {tuple(targets.shape)}")
    if int(lengths.sum()) != targets.numel():
        raise ValueError(f"concatenated targets hold {targets.numel()} labels but target_lengths sum to "
                         f"{int(lengths.sum())}")
    padded = torch.zeros(batch, int(lengths.max()) if batch else 0, dtype=torch.int64)
    mask = torch.arange(padded.shape[1]) < lengths.unsqueeze(1)
    padded[mask] = targets
    return padded


def prepare(log_probs, targets, input_lengths, target_lengths, blank: int, reduction: str) -> CTCBatch:
    """Checks every argument (ValueError naming it) and converts to the kernels' layout."""
    if not isinstance(log_probs, torch.Tensor) or log_probs.dtype not in (torch.float32, torch.float64):
        dtype = getattr(log_probs, "dtype", type(log_probs).__name__)
        raise ValueError(f"log_probs must be a float32 or float64 tensor, got {dtype}")
    if log_probs.dim() not in (2, 3):
        raise ValueError(f"log_probs must be (T, B, V) or unbatched (T, V), got shape {tuple(log_probs.shape)}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    batched = log_probs.dim() == 3
    lp = log_probs if batched else log_probs.unsqueeze(1)
    num_frames, batch, vocab = lp.shape
    if num_frames == 0 or vocab == 0:
        raise ValueError(f"log_probs must have at least one frame and one token, got shape {tuple(log_probs.shape)}")
    if not isinstance(blank, int) or not 0 <= blank < vocab:
        raise ValueError(f"blank must be an int in [0, {vocab}), got {blank!r}")
    in_len = checked_lengths(input_lengths, "input_lengths", batch)
    tgt_len = checked_lengths(target_lengths, "target_lengths", batch)
    if batch and int(in_len.max()) > num_frames:
        i = int(torch.argmax(in_len))
        raise ValueError(f"input_lengths[{i}] = {int(in_len[i])} exceeds the {num_frames} frames of log_probs")
    padded = _padded_targets(targets, tgt_len, batch, batched)
    valid = torch.arange(padded.shape[1]) < tgt_len.unsqueeze(1)
    bad = valid & ((padded < 0) | (padded >= vocab) | (padded == blank))
    if bool(bad.any()):
        b, j = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"targets[{b}][{j}] = {int(padded[b, j])} is not a label: labels lie in [0, {vocab}) and "
                         f"differ from blank={blank}")
    padded = torch.where(valid, padded, torch.full_like(padded, blank))
    device = lp.device
    return CTCBatch(lp.contiguous(), padded.to(device), in_len.to(device), tgt_len.to(device), not batched)


def _ops(name: str):
    """forward, grad and hvp of a compiled or numba backend (same contracts)."""
    if name in ("cpp", "cuda"):
        ext = backends.extension()
        return SimpleNamespace(forward=ext.ctc_forward, grad=ext.ctc_grad, hvp=ext.ctc_hvp)
    from metarecipe.kernels import ctc_numba

    return ctc_numba


class _CTCLoss(torch.autograd.Function):
    """Per-sample losses (B,) from a compiled or numba backend; backward is _CTCGrad."""

    @staticmethod
    def forward(ctx, log_probs, targets, input_lengths, target_lengths, blank, ops):
        log_z, alpha_m, alpha_l = ops.forward(log_probs, targets, input_lengths, target_lengths, blank)
        ctx.save_for_backward(log_probs)
        ctx.lattice = (targets, input_lengths, target_lengths, alpha_m, alpha_l)
        ctx.blank, ctx.ops = blank, ops
        return log_z.neg().to(log_probs.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        (log_probs,) = ctx.saved_tensors
        grad = _CTCGrad.apply(grad_loss, log_probs, ctx.blank, ctx.ops, *ctx.lattice)
        return grad, None, None, None, None, None


class _CTCGrad(torch.autograd.Function):
    """grad_loss (B,) -> d(sum_b grad_loss_b loss_b) / d log_probs (T, B, V); its backward is the
    Hessian-vector product, which makes the loss twice differentiable."""

    @staticmethod
    def forward(ctx, grad_loss, log_probs, blank, ops, *lattice):
        grad = ops.grad(grad_loss, log_probs, *lattice, blank)
        ctx.save_for_backward(grad_loss, log_probs)
        ctx.lattice, ctx.blank, ctx.ops = lattice, blank, ops
        return grad

    @staticmethod
    @once_differentiable
    def backward(ctx, v):
        grad_loss, log_probs = ctx.saved_tensors
        hv, vg = ctx.ops.hvp(v, grad_loss, log_probs, *ctx.lattice, ctx.blank)
        return (vg.to(grad_loss.dtype), hv) + (None,) * (2 + len(ctx.lattice))


def per_sample_losses(batch: CTCBatch, blank: int, backend: str) -> torch.Tensor:
    """-log Z of every sample (B,), +inf where no alignment exists; differentiable twice (to any order on
    the torch backend)."""
    args = (batch.log_probs, batch.targets, batch.input_lengths, batch.target_lengths, blank)
    if backend == "torch":
        return reference_losses(*args)
    return _CTCLoss.apply(*args, _ops(backend))


def ctc_loss(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths, target_lengths, blank: int = 0,
             reduction: str = "mean", zero_infinity: bool = False, backend: str | None = None) -> torch.Tensor:
    """Connectionist temporal classification loss, twice differentiable.

    Args as ``torch.nn.functional.ctc_loss``: log_probs (T, B, V) or (T, V), any real scores (the gradient is
    exact whether or not they are normalised); targets (B, S) padded or 1-D concatenated (S,);
    input_lengths, target_lengths (B,). ``backend``: None for the fastest on the device of log_probs, or one of
    ``available_backends()``. Returns (B,) for reduction "none" (a scalar when unbatched), else a scalar:
    "mean" divides each loss by its target length (at least 1) and averages, as torch does. Samples with no
    alignment give inf (0 with ``zero_infinity``) and a zero gradient either way (torch's is NaN without
    ``zero_infinity``).
    """
    batch = prepare(log_probs, targets, input_lengths, target_lengths, blank, reduction)
    name = backends.select_backend("ctc_loss", batch.log_probs.device, backend)
    losses = per_sample_losses(batch, blank, name)
    if zero_infinity:
        losses = torch.where(torch.isinf(losses), torch.zeros_like(losses), losses)
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return (losses / batch.target_lengths.clamp(min=1).to(losses.dtype)).mean()
    return losses[0] if batch.unbatched else losses
