"""Run by tests/test_distributed.py under torchrun: the shared meta-gradient of a fixed meta-batch.

Usage: torchrun --nproc-per-node N tests/distributed_worker.py ALGORITHM OUT.pt; rank 0 saves (loss, grads).
"""

import sys

import torch
import torch.distributed as dist

from metarecipe.meta import InnerLoop, make_algorithm
from metarecipe.meta.distributed import TaskGroup
from metarecipe.meta.tasks import MetaBatch, TaskSet
from metarecipe.models import BatchedCTCModel, ModelConfig


def problem(algorithm: str, num_tasks: int = 5, seed: int = 0):
    """A small model, its algorithm and a meta-batch of num_tasks tasks with variable lengths."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = BatchedCTCModel(ModelConfig(vocab_size=6, num_mel_bins=20, conv_channels=4, d_model=16, gru_hidden=8,
                                        gru_layers=1))
    algo = make_algorithm(algorithm, model, InnerLoop(lr=0.1))

    def task_set():
        lengths = torch.randint(30, 61, (num_tasks, 2), generator=gen)
        targets = torch.randint(1, 6, (num_tasks, 2, 4), generator=gen)
        return TaskSet(torch.randn(num_tasks, 2, 60, 20, generator=gen), lengths, targets,
                       torch.randint(1, 5, (num_tasks, 2), generator=gen))

    return algo, MetaBatch(task_set(), task_set())


if __name__ == "__main__":
    dist.init_process_group("gloo")
    algo, batch = problem(sys.argv[1])
    loss, grads = TaskGroup().meta_gradient(algo, batch)
    if dist.get_rank() == 0:
        torch.save({"loss": loss, "grads": grads, "world": dist.get_world_size()}, sys.argv[2])
    dist.destroy_process_group()
