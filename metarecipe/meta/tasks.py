"""A meta-batch: N tasks, each with a support and a query set, padded to common shapes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarecipe.kernels import ctc_loss


@dataclass
class TaskSet:
    """feats (N, B, T, F), lengths (N, B), targets (N, B, U) padded, target_lengths (N, B)."""

    feats: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor

    @property
    def num_tasks(self) -> int:
        return self.feats.shape[0]

    def to(self, device) -> TaskSet:
        return TaskSet(*(t.to(device) for t in (self.feats, self.lengths, self.targets, self.target_lengths)))


@dataclass
class MetaBatch:
    support: TaskSet
    query: TaskSet

    def to(self, device) -> MetaBatch:
        return MetaBatch(self.support.to(device), self.query.to(device))


def task_losses(model, params: dict[str, torch.Tensor], tasks: TaskSet, backend: str | None = None,
                gru_backend: str | None = None) -> torch.Tensor:
    """CTC loss of every task (N,): the mean over its utterances of loss / target length (torch's "mean").
    backend: of the CTC kernel; gru_backend: of the model's recurrences."""
    log_probs, out_lengths = model.functional_forward(params, tasks.feats, tasks.lengths, gru_backend)
    return ctc_task_losses(log_probs, out_lengths, tasks, backend)


def ctc_task_losses(log_probs: torch.Tensor, out_lengths: torch.Tensor, tasks: TaskSet,
                    backend: str | None = None) -> torch.Tensor:
    """log_probs (N, B, T', V), out_lengths (N, B) and the tasks' targets -> CTC loss of every task (N,)."""
    n, b, t, v = log_probs.shape
    losses = ctc_loss(log_probs.reshape(n * b, t, v).transpose(0, 1), tasks.targets.reshape(n * b, -1),
                      out_lengths.reshape(-1), tasks.target_lengths.reshape(-1), reduction="none",
                      zero_infinity=True, backend=backend)
    per_utt = losses / tasks.target_lengths.reshape(-1).clamp(min=1).to(losses.dtype)
    return per_utt.reshape(n, b).mean(dim=1)
