"""Adaptation to a target task on a budget of minutes of speech, with the algorithm's own inner-loop rule.

The budget is drawn from the target's training data only (never dev or test); a held-out slice of it decides
early stopping. The update rule is the meta-learner's: Meta-SGD's learned per-element rates, ANIL's head-only
steps, plain SGD at the inner learning rate for the others (and for `scratch`, from a fresh initialisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from metarecipe.config import ConfigError, require, require_at_least, require_positive
from metarecipe.meta.sampling import Utterance, collate, draw_seconds
from metarecipe.meta.tasks import task_losses


@dataclass(frozen=True)
class AdaptConfig:
    minutes: float
    lr: float = 0.1
    max_steps: int = 200
    batch_utts: int = 4
    held_out_share: float = 0.2
    eval_every: int = 5
    patience: int = 4  # evaluations without improvement before stopping
    seed: int = 0

    def __post_init__(self):
        require_positive(self, "minutes", "lr")
        require_at_least(self, 1, "max_steps", "batch_utts", "eval_every", "patience")
        require(0 < self.held_out_share < 1, "held_out_share", f"must lie in (0, 1), got {self.held_out_share!r}")


@dataclass
class AdaptResult:
    params: dict[str, torch.Tensor]  # the best parameters (held-out loss), unstacked
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    train_seconds: float = 0.0
    held_out_seconds: float = 0.0


def budget_split(pool: list[Utterance], config: AdaptConfig, rng: np.random.Generator):
    """(train, held-out) utterances drawn from `minutes` of the pool; ConfigError if the pool is smaller or the
    budget holds too few utterances to split."""
    available = sum(u.seconds for u in pool) / 60
    if config.minutes > available:
        raise ConfigError(f"adaptation budget of {config.minutes:g} min exceeds the {available:.2f} min of target "
                         "training data")
    chosen = draw_seconds(pool, config.minutes * 60, rng)
    held = max(1, int(round(len(chosen) * config.held_out_share)))
    if len(chosen) - held < 1:
        raise ConfigError(f"a budget of {config.minutes:g} min holds {len(chosen)} utterance(s): too few to adapt")
    return chosen[held:], chosen[:held]


def adapt(model, pool: list[Utterance], config: AdaptConfig, rule: str = "sgd", alphas=None,
          backend: str | None = None, masks: dict[str, torch.Tensor] | None = None,
          losses=task_losses) -> AdaptResult:
    """Fine-tunes model's parameters on `config.minutes` of the pool. rule: "sgd" (all parameters), "head"
    (ANIL: the output head only) or "metasgd" (per-element rates `alphas`, a dict of tensors).
    masks (name -> bool tensor): entries that stay zero after every step (a pruned model's fine-tune).
    losses(model, params, tasks, backend) -> (N,): the objective, trained and held out (default: CTC)."""
    if rule not in ("sgd", "head", "metasgd"):
        raise ValueError(f"adaptation rule must be sgd, head or metasgd, got {rule!r}")
    if rule == "metasgd" and alphas is None:
        raise ValueError("the metasgd rule needs the meta-learned rates (alphas)")
    rng = np.random.default_rng(config.seed)
    train, held_out = budget_split(pool, config, rng)
    device = next(iter(model.params.values())).device
    held_set = collate([held_out], len(held_out)).to(device)
    params = {n: p.detach().clone() for n, p in model.params.items()}
    names = [n for n in params if rule != "head" or n.startswith("head_")]

    def held_out_loss(p):
        with torch.no_grad():
            return float(losses(model, {n: v.unsqueeze(0) for n, v in p.items()}, held_set, backend)[0])

    best, best_loss = {n: v.clone() for n, v in params.items()}, held_out_loss(params)
    result = AdaptResult(best, [(0, best_loss)], sum(u.seconds for u in train), sum(u.seconds for u in held_out))
    stale = 0
    for step in range(1, config.max_steps + 1):
        batch = [train[i] for i in rng.choice(len(train), size=min(config.batch_utts, len(train)), replace=False)]
        trainable = {n: params[n].requires_grad_() for n in names}
        batch_set = collate([batch], len(batch)).to(device)
        loss = losses(model, {n: v.unsqueeze(0) for n, v in params.items()}, batch_set, backend)[0]
        grads = torch.autograd.grad(loss, list(trainable.values()))
        with torch.no_grad():
            for (name, value), grad in zip(trainable.items(), grads, strict=True):
                rate = alphas[name] if rule == "metasgd" else config.lr
                params[name] = (value - rate * grad).detach()
                if masks is not None and name in masks:
                    params[name] = params[name] * masks[name]
        if step % config.eval_every == 0:
            current = held_out_loss(params)
            result.history.append((step, current))
            if current < best_loss - 1e-6 or not math.isfinite(best_loss):
                best, best_loss, stale = {n: v.clone() for n, v in params.items()}, current, 0
            else:
                stale += 1
                if stale >= config.patience:
                    break
    result.params = best
    return result
