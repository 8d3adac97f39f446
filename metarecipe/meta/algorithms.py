"""Meta-learning algorithms behind one interface: `meta_gradient(model, batch) -> (query loss, gradients)`.

Every algorithm adapts all N tasks of a meta-batch at once (task-batched parameters, one batched computation)
and returns the gradient of its meta-objective with respect to the shared initial parameters (and its own
meta-parameters: Meta-SGD's learning rates). An outer optimiser then steps on them.

- maml: inner SGD steps with create_graph, the exact second-order meta-gradient.
- fomaml: the same steps without differentiating through them (first-order approximation).
- reptile: inner steps on the support set; the meta-gradient is theta - mean over tasks of adapted theta.
- metasgd: MAML with a learned learning rate per parameter element, meta-learned too.
- anil: MAML whose inner loop adapts only the output head.
- multilingual: no inner loop; the gradient of the loss on support and query sets at theta (joint training
  on the source tasks, fine-tuned afterwards).
- pnn: progressive networks; the source column is trained jointly on the source tasks (as multilingual), and
  adaptation trains a new column with lateral connections to the frozen source column.
- scratch: no meta-training; adaptation trains the seeded initial model on the target data only.

`adaptation()` gives how the meta-trained model is adapted (metarecipe.meta.plan: the update rule and the model
it trains) and Meta-SGD's learned rates.
With `InnerLoop(multi_step_loss=True)` MAML-family algorithms average the query loss after every inner step
(MAML++, Antoniou et al. 2019) instead of taking it after the last one only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metarecipe.meta.plan import AdaptationPlan
from metarecipe.meta.tasks import MetaBatch, TaskSet, task_losses


@dataclass(frozen=True)
class Adaptation:
    plan: AdaptationPlan  # the update rule and the model it trains (model_to_adapt builds that model)
    alphas: dict[str, torch.Tensor] | None = None  # Meta-SGD's learned rates, one per parameter element


@dataclass(frozen=True)
class InnerLoop:
    lr: float = 0.1
    steps: int = 1
    backend: str | None = None  # CTC kernel backend
    multi_step_loss: bool = False


class MetaAlgorithm(nn.Module):
    """Base: subclasses set `second_order` and may restrict `adapted` parameter names."""

    second_order = True
    meta_trains = True  # False: the algorithm has no meta-training stage (scratch)

    def __init__(self, model, inner: InnerLoop):
        super().__init__()
        self.model, self.inner = model, inner

    def adaptation(self) -> Adaptation:
        """How the meta-trained model is adapted."""
        return Adaptation(AdaptationPlan("sgd"))

    def adapted(self, name: str) -> bool:
        return True

    def inner_update(self, name: str, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return param - self.inner.lr * grad

    def adapt_steps(self, support: TaskSet, create_graph: bool) -> list[dict[str, torch.Tensor]]:
        """Per-task parameters (N, ...) after each inner step on the support sets (the last is the result)."""
        params = self.model.stacked(support.num_tasks)
        names = [n for n in params if self.adapted(n)]
        history = []
        for _ in range(self.inner.steps):
            loss = task_losses(self.model, params, support, self.inner.backend).sum()  # tasks independent
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
            params = dict(params)
            for name, grad in zip(names, grads, strict=True):
                params[name] = self.inner_update(name, params[name], grad if create_graph else grad.detach())
            history.append(params)
        return history

    def adapt(self, support: TaskSet, create_graph: bool) -> dict[str, torch.Tensor]:
        """Per-task parameters (N, ...) after the inner loop on the support sets."""
        return self.adapt_steps(support, create_graph)[-1]

    def meta_parameters(self) -> list[nn.Parameter]:
        return list(self.model.params.values()) + [p for n, p in self.named_parameters() if not n.startswith("model.")]

    def meta_gradient(self, batch: MetaBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(mean query loss, gradients of it for meta_parameters())."""
        steps = self.adapt_steps(batch.support, create_graph=self.second_order)
        scored = steps if self.inner.multi_step_loss else steps[-1:]
        query = sum(task_losses(self.model, p, batch.query, self.inner.backend).mean() for p in scored) / len(scored)
        return query.detach(), list(torch.autograd.grad(query, self.meta_parameters(), allow_unused=True))


class MAML(MetaAlgorithm):
    second_order = True


class FOMAML(MetaAlgorithm):
    second_order = False


class ANIL(MetaAlgorithm):
    second_order = True

    def adapted(self, name: str) -> bool:
        return name.startswith("head_")

    def adaptation(self) -> Adaptation:
        return Adaptation(AdaptationPlan("head"))


class MetaSGD(MetaAlgorithm):
    """Inner step theta - alpha * grad with alpha (one per parameter element) meta-learned."""

    def __init__(self, model, inner: InnerLoop):
        super().__init__(model, inner)
        self.alphas = nn.ParameterDict({n: nn.Parameter(torch.full_like(p, inner.lr))
                                        for n, p in model.params.items()})

    def inner_update(self, name, param, grad):
        return param - self.alphas[name] * grad

    def adaptation(self) -> Adaptation:
        return Adaptation(AdaptationPlan("metasgd"), {n: a.detach() for n, a in self.alphas.items()})


class Reptile(MetaAlgorithm):
    second_order = False

    def meta_gradient(self, batch: MetaBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(mean support loss after adaptation, theta - mean adapted theta)."""
        params = self.adapt(batch.support, create_graph=False)
        with torch.no_grad():
            loss = task_losses(self.model, params, batch.support, self.inner.backend).mean()
            grads = [p - params[n].mean(dim=0) for n, p in self.model.params.items()]
        return loss, grads


class Multilingual(MetaAlgorithm):
    """Joint training on the source tasks: no inner loop, the loss of support and query sets at theta."""

    def meta_gradient(self, batch: MetaBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        params = self.model.stacked(batch.support.num_tasks)
        loss = sum(task_losses(self.model, params, s, self.inner.backend).mean() for s in (batch.support, batch.query))
        return loss.detach() / 2, list(torch.autograd.grad(loss / 2, self.meta_parameters()))


class PNN(Multilingual):
    """Progressive networks: the source column is trained jointly; adaptation grows a target column."""

    new_column = "source"

    def adaptation(self) -> Adaptation:
        return Adaptation(AdaptationPlan("sgd", column=self.new_column))


class Scratch(MetaAlgorithm):
    """The target data only: nothing to meta-train; adaptation trains its model, the seeded initialisation."""

    meta_trains = False

    def meta_gradient(self, batch: MetaBatch):
        raise RuntimeError("scratch has no meta-training: it trains on the target data only (adaptation)")


ALGORITHMS = {"maml": MAML, "fomaml": FOMAML, "anil": ANIL, "metasgd": MetaSGD, "reptile": Reptile,
              "multilingual": Multilingual, "pnn": PNN, "scratch": Scratch}


def make_algorithm(name: str, model, inner: InnerLoop) -> MetaAlgorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown meta-learning algorithm '{name}'; choose from {sorted(ALGORITHMS)}")
    return ALGORITHMS[name](model, inner)
