"""Meta-learning: tasks and meta-batches, and the algorithms behind one interface."""

from metarecipe.meta.algorithms import ALGORITHMS, InnerLoop, MetaAlgorithm, make_algorithm
from metarecipe.meta.tasks import MetaBatch, TaskSet, task_losses

__all__ = ["ALGORITHMS", "InnerLoop", "MetaAlgorithm", "MetaBatch", "TaskSet", "make_algorithm", "task_losses"]
