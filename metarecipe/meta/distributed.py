"""Meta-batches shared across processes (torch.distributed, launched by torchrun).

Every process draws the same meta-batch (it depends on seed and step only), takes the tasks `rank::world`,
computes their meta-gradient with the task-batched engine and one all-reduce of a single flat buffer (the
gradients and the loss) combines the shares, each weighted by its number of tasks: the result is the
single-process meta-gradient (the mean over tasks), whatever the number of processes, so a run can resume with
a different number of them. gloo on the CPU, NCCL on GPUs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from metarecipe.meta.tasks import MetaBatch, TaskSet


def _tasks(tasks: TaskSet, index: torch.Tensor) -> TaskSet:
    return TaskSet(tasks.feats[index], tasks.lengths[index], tasks.targets[index], tasks.target_lengths[index])


class TaskGroup:
    """The processes that share each meta-batch: one (rank 0 of 1) unless torch.distributed is initialised."""

    def __init__(self):
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1

    def share(self, batch: MetaBatch) -> tuple[MetaBatch, float]:
        """This process's tasks of the batch and their share of all tasks."""
        num_tasks = batch.support.num_tasks
        if num_tasks < self.world:
            raise ValueError(f"{num_tasks} tasks per meta-batch cannot be shared by {self.world} processes: "
                             f"use at least as many tasks as processes")
        index = torch.arange(self.rank, num_tasks, self.world)
        return MetaBatch(_tasks(batch.support, index), _tasks(batch.query, index)), len(index) / num_tasks

    def meta_gradient(self, algo, batch: MetaBatch) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """(mean loss over all tasks of the batch, its gradients for algo.meta_parameters())."""
        if not self.distributed:
            return algo.meta_gradient(batch)
        mine, weight = self.share(batch)
        loss, grads = algo.meta_gradient(mine)
        params = algo.meta_parameters()
        flat = torch.cat([(torch.zeros_like(p) if g is None else g.detach()).reshape(-1) for p, g in
                          zip(params, grads, strict=True)] + [loss.detach().reshape(1)]) * weight
        dist.all_reduce(flat)
        out, offset = [], 0
        for p in params:
            out.append(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        return flat[-1], out
