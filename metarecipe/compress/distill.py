"""The objective of a compressed model's fine-tune: CTC on the budget's transcripts, mixed with the frame-level
KL divergence from the uncompressed model's posteriors on the same speech (pruning keeps the frame rate, so the
frames line up). Distillation keeps the compressed model close to the one it replaces, where a few minutes of
transcripts alone move it by several CER points either way."""

from __future__ import annotations

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from metarecipe.config import ConfigError
from metarecipe.meta.tasks import TaskSet, ctc_task_losses


def check_distill(weight: float) -> None:
    """ConfigError unless 0 <= weight <= 1."""
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"distill: the weight of the distillation term must lie in [0, 1], got {weight:g}")


def masked_kl(teacher: torch.Tensor, student: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """teacher, student (N, B, T', V) log-probabilities, lengths (N, B) valid frames -> (N,): per task, the mean
    over its valid frames of KL(teacher || student)."""
    valid = (torch.arange(student.shape[2], device=student.device) < lengths.unsqueeze(-1)).to(student.dtype)
    per_frame = (teacher.exp() * (teacher - student)).sum(-1)
    return (per_frame * valid).sum((1, 2)) / valid.sum((1, 2)).clamp(min=1)


def distillation_losses(teacher, weight: float):
    """The losses function of meta.adapt.adapt: (1 - weight) x CTC + weight x KL(teacher || model), per task
    (N,). teacher: the uncompressed BatchedCTCModel, frozen: its posteriors are kept while the features they
    came from live (the held-out set is scored at every evaluation, each training batch once)."""
    check_distill(weight)
    posteriors = WeakTensorKeyDictionary()  # feats tensor -> the teacher's log-probabilities

    def losses(model, params: dict[str, torch.Tensor], tasks: TaskSet, backend: str | None = None):
        log_probs, lengths = model.functional_forward(params, tasks.feats, tasks.lengths)
        if tasks.feats not in posteriors:
            with torch.no_grad():
                posteriors[tasks.feats] = teacher.functional_forward(teacher.stacked(tasks.num_tasks), tasks.feats,
                                                                     tasks.lengths)[0]
        target = posteriors[tasks.feats]
        total = weight * masked_kl(target, log_probs, lengths)
        if weight < 1.0:
            total = total + (1.0 - weight) * ctc_task_losses(log_probs, lengths, tasks, backend)
        return total

    return losses
