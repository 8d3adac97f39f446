"""Random CTC problems and comparison helpers shared by the kernel tests.

Every test draws fresh inputs: the seed comes from the system unless METARECIPE_TEST_SEED fixes it, and it
is part of every failure message so that a failure can be replayed.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

from metarecipe.kernels import available_backends

CPU_BACKENDS = [b for b in available_backends() if b != "cuda"]
# every backend of this install on its device; cuda is collected everywhere and skipped without a GPU
BACKENDS = CPU_BACKENDS + [pytest.param("cuda", marks=pytest.mark.gpu)]


def fresh_seed() -> int:
    return int(os.environ.get("METARECIPE_TEST_SEED", random.SystemRandom().randrange(2**31)))


def device_of(backend: str) -> torch.device:
    return torch.device("cuda" if backend == "cuda" else "cpu")


def ctc_problem(seed: int, batch: int = 5, frames: int = 30, vocab: int = 7, max_labels: int = 8,
                dtype=torch.float64, device="cpu", min_frames: int = 1):
    """Raw scores (T, B, V) requiring grad, padded targets (B, U) with labels in [1, V), variable input and
    target lengths (every alignment feasible: T_b >= 2 U_b + 1)."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(frames, batch, vocab, generator=gen, dtype=torch.float64).to(dtype)
    target_lengths = torch.randint(0, max_labels + 1, (batch,), generator=gen)
    input_lengths = torch.randint(max(min_frames, 1), frames + 1, (batch,), generator=gen)
    input_lengths = torch.maximum(input_lengths, 2 * target_lengths + 1).clamp(max=frames)
    target_lengths = torch.minimum(target_lengths, (input_lengths - 1) // 2)
    input_lengths[0] = frames  # the longest sample fills the padding
    targets = torch.randint(1, vocab, (batch, max_labels), generator=gen)
    return (scores.to(device).requires_grad_(), targets.to(device), input_lengths.to(device),
            target_lengths.to(device))


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str, seed: int) -> None:
    """max |actual - expected| <= rtol * max |expected| (relative to the scale of the whole tensor)."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    finite = torch.isfinite(expected)
    assert torch.equal(finite, torch.isfinite(actual)), f"{what}: infinities differ (seed {seed})"
    scale = expected[finite].abs().max().item() if finite.any() else 0.0
    err = (actual[finite] - expected[finite]).abs().max().item() if finite.any() else 0.0
    assert err <= rtol * max(scale, 1e-30), f"{what}: max error {err:.3e} > {rtol:g} x {scale:.3e} (seed {seed})"


def as_torch_gradient(grad: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """The true gradient w.r.t. log_probs carried to the form torch returns, which folds in the backward of a
    log_softmax in front (pytorch issue 52241): g - sum(g) * exp(log_probs) per frame."""
    return grad - grad.sum(-1, keepdim=True) * log_probs.exp()
