"""Adaptation to a target task on a budget of minutes of speech, with the algorithm's own inner-loop rule.

The budget is drawn from the target's training data only (never dev or test); a held-out slice of it decides
early stopping. The schedule scales with the budget: batches of `batch_share` of the training seconds (within
`min_batch_seconds`, `max_batch_seconds`), `epochs` passes over the training part (within `min_steps`,
`max_steps`; max_steps caps min_steps too), one held-out evaluation per epoch unless `eval_every` says otherwise,
and no early stop before min_steps or one epoch, whichever is later.

Every evaluation scores the held-out slice twice: the training objective (`losses`, CTC by default) and the CER
of a greedy CTC decode; `criterion` picks the one that chooses the best parameters (cer: ties broken by the
loss). Early stopping waits for `patience` evaluations in which neither reached a new low: with tens of seconds
of held-out speech one of them may stall while the model still learns (a fresh model's CER sits near 100% for a
while as its loss falls). A run diverges when a training loss or gradient is not finite, or the held-out loss is
not finite, exceeds `divergence_factor` x its initial value or is infinite for more utterances than at first (the
objective counts those as 0): it stops there, keeps the best parameters and says so.

Optimisers: `sgd` is the meta-learner's rule: Meta-SGD's learned per-element rates (rule metasgd), ANIL's
head-only steps (rule head), plain SGD at `lr` for the others (and for `scratch`, from a fresh initialisation).
Rule input trains the input layers only: the speaker-adaptation baseline (what LIN or fMLLR adapt).
`adam` applies Adam at `lr` to the parameters the rule trains (all, or the head); it has no meaning for rule
metasgd, whose meta-learned rates are themselves the per-element step sizes Adam would replace: that
combination is a ConfigError. Both follow the warm-up and decay of the rate; `freeze` keeps parameters whose
names start with one of its prefixes unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from metarecipe.config import ConfigError, require, require_at_least, require_positive
from metarecipe.decode import error_rate
from metarecipe.decode.greedy import greedy_decode
from metarecipe.features.augment import Augmenter
from metarecipe.io.pools import Utterance
from metarecipe.kernels import ctc_loss
from metarecipe.meta.sampling import collate, draw_seconds
from metarecipe.meta.tasks import TaskSet, task_losses

OPTIMIZERS = ("sgd", "adam")
CRITERIA = ("cer", "loss")
LR_DECAYS = ("cosine", "constant")
DEFAULT_LR = {"sgd": 0.02, "adam": 5e-4}
RULES = ("sgd", "head", "metasgd", "input")
# what each rule trains: name prefixes (None: every parameter). input is what speaker adaptation usually adapts:
# the layers nearest the features (the convolutions and their projection), as a linear input transform does
TRAINED_BY_RULE = {"sgd": None, "metasgd": None, "head": ("head_",), "input": ("conv1_", "conv2_", "proj_")}


@dataclass(frozen=True)
class AdaptConfig:
    minutes: float
    optimizer: str = "sgd"  # sgd (the meta-learner's rule) or adam
    lr: float | None = None  # None: 0.02 for sgd, 5e-4 for adam (sgd with rule metasgd uses the learned rates)
    epochs: float = 20.0  # passes over the training part of the budget...
    min_steps: int = 50  # ...but at least this many steps (and no early stop before them)...
    max_steps: int = 1000  # ...and at most this many
    batch_share: float = 0.1  # a batch holds this share of the training seconds...
    min_batch_seconds: float = 8.0  # ...but at least this many seconds of speech (or all of them)...
    max_batch_seconds: float = 32.0  # ...and at most this many
    warmup_share: float = 0.1  # the rate rises linearly over this share of the planned steps
    lr_decay: str = "cosine"  # cosine (towards 0 at the last planned step) or constant
    clip_grad_norm: float | None = 5.0  # the gradient's global norm is scaled down to this; None: no clipping
    freeze: list[str] = field(default_factory=list)  # name prefixes of parameters kept unchanged
    criterion: str = "cer"  # held-out criterion of the best parameters: cer (ties: loss) or loss
    held_out_share: float = 0.2
    eval_every: int | None = None  # steps between held-out evaluations; None: one epoch
    patience: int = 5  # evaluations without a new lowest held-out loss or CER before stopping
    divergence_factor: float = 3.0  # a held-out loss above this x the initial one is a divergence
    seed: int = 0

    def __post_init__(self):
        require(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {list(OPTIMIZERS)}, got "
                                                           f"{self.optimizer!r}")
        require(self.criterion in CRITERIA, "criterion", f"must be one of {list(CRITERIA)}, got {self.criterion!r}")
        require(self.lr_decay in LR_DECAYS, "lr_decay", f"must be one of {list(LR_DECAYS)}, got {self.lr_decay!r}")
        require_positive(self, "minutes", "epochs", "min_batch_seconds", "max_batch_seconds")
        for name in ("lr", "clip_grad_norm"):
            if getattr(self, name) is not None:
                require_positive(self, name)
        require_at_least(self, 1, "min_steps", "max_steps", "patience")
        if self.eval_every is not None:
            require_at_least(self, 1, "eval_every")
        require(self.max_batch_seconds >= self.min_batch_seconds, "max_batch_seconds",
                f"must be at least min_batch_seconds ({self.min_batch_seconds!r}), got {self.max_batch_seconds!r}")
        require(0 < self.batch_share <= 1, "batch_share", f"must lie in (0, 1], got {self.batch_share!r}")
        require(0 <= self.warmup_share < 1, "warmup_share", f"must lie in [0, 1), got {self.warmup_share!r}")
        require(0 < self.held_out_share < 1, "held_out_share", f"must lie in (0, 1), got {self.held_out_share!r}")
        require(math.isfinite(self.divergence_factor) and self.divergence_factor > 1, "divergence_factor",
                f"must be above 1, got {self.divergence_factor!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


@dataclass(frozen=True)
class Schedule:
    batch_seconds: float  # seconds of speech per batch
    steps_per_epoch: int  # batches in one pass over the training part
    planned_steps: int
    eval_every: int
    earliest_stop: int  # no early stop before this step

    def rate_scale(self, step: int, config: AdaptConfig) -> float:
        """The factor of the learning rate (or of Meta-SGD's rates) at `step` (1-based): warm-up, then decay."""
        warmup = round(config.warmup_share * self.planned_steps)
        scale = min(1.0, step / warmup) if warmup else 1.0
        if config.lr_decay == "cosine":
            scale *= 0.5 * (1 + math.cos(math.pi * (step - 1) / self.planned_steps))
        return scale


def plan_schedule(config: AdaptConfig, train_seconds: float) -> Schedule:
    """The batch size, steps and evaluation interval for a training part of `train_seconds`."""
    batch = min(config.max_batch_seconds, max(config.min_batch_seconds, config.batch_share * train_seconds))
    batch = min(batch, train_seconds)
    per_epoch = max(1, math.ceil(train_seconds / batch - 1e-9))
    planned = min(config.max_steps, max(config.min_steps, math.ceil(config.epochs * per_epoch)))
    return Schedule(batch, per_epoch, planned, config.eval_every or per_epoch,
                    min(planned, max(config.min_steps, per_epoch)))


@dataclass
class Evaluation:
    step: int
    loss: float  # held-out loss (the training objective)
    cer: float  # held-out CER (%) of a greedy CTC decode
    infinite_ctc: int = 0  # held-out utterances whose CTC loss is infinite (more than at step 0: a divergence)
    train_loss: float | None = None  # mean training loss of the steps since the previous evaluation
    grad_norm: float | None = None  # their mean gradient norm, before clipping
    rate_scale: float | None = None  # the mean factor of the rate (warm-up, decay) over those steps

    def record(self) -> dict:
        """A JSON line of history.jsonl (non-finite numbers as null)."""
        return {"step": self.step, "held_out_loss": finite_or_none(self.loss),
                "held_out_cer": finite_or_none(self.cer), "infinite_ctc": self.infinite_ctc,
                "train_loss": finite_or_none(self.train_loss),
                "grad_norm": finite_or_none(self.grad_norm), "rate_scale": self.rate_scale}


@dataclass
class AdaptResult:
    params: dict[str, torch.Tensor]  # the best parameters (held-out criterion), unstacked
    evaluations: list[Evaluation]  # every held-out evaluation, step 0 and the last step run included
    schedule: Schedule
    steps: int = 0  # steps run
    best_step: int = 0
    last_progress_step: int = 0  # the last evaluation with a new lowest held-out loss or CER
    stopped: str = "max_steps"  # early, max_steps (every planned step ran) or diverged
    diverged_at: int | None = None
    divergence: str = ""  # why the run diverged
    train_seconds: float = 0.0
    held_out_seconds: float = 0.0
    train_utterances: int = 0
    held_out_utterances: int = 0
    wall_seconds: float = 0.0

    @property
    def history(self) -> list[tuple[int, float]]:
        """(step, held-out loss) of every evaluation."""
        return [(e.step, e.loss) for e in self.evaluations]

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def kept_initial(self) -> bool:
        return self.best_step == 0

    @property
    def best(self) -> Evaluation:
        return next(e for e in self.evaluations if e.step == self.best_step)

    @property
    def stale(self) -> int:
        """Evaluations since the last one that made progress."""
        return sum(e.step > self.last_progress_step for e in self.evaluations)


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def budget_split(pool: list[Utterance], config: AdaptConfig, rng: np.random.Generator):
    """(train, held-out) utterances drawn from `minutes` of the pool until the budget is reached; utterances
    longer than the budget are left out, so that one long prompt cannot stand for a budget of seconds (the draw
    exceeds the budget by less than its last utterance). ConfigError if the pool is smaller or the budget holds
    too few utterances to split."""
    available = sum(u.seconds for u in pool) / 60
    if config.minutes > available:
        raise ConfigError(f"adaptation budget of {config.minutes:g} min exceeds the {available:.2f} min of target "
                         "training data")
    pool = [u for u in pool if u.seconds <= config.minutes * 60]
    fitting = sum(u.seconds for u in pool) / 60
    if config.minutes > fitting:
        raise ConfigError(f"adaptation budget of {config.minutes:g} min: the target's utterances no longer than "
                          f"the budget hold only {fitting:.2f} min")
    chosen = draw_seconds(pool, config.minutes * 60, rng)
    held = max(1, int(round(len(chosen) * config.held_out_share)))
    if len(chosen) - held < 1:
        raise ConfigError(f"a budget of {config.minutes:g} min holds {len(chosen)} utterance(s): too few to adapt")
    return chosen[held:], chosen[:held]


def trainable_names(config: AdaptConfig, rule: str, names, prefix: str = "") -> list[str]:
    """The parameters the rule trains, less the frozen ones; ConfigError naming the key (`prefix` + name) for a
    freeze prefix that matches no parameter, a rule left nothing to train, or adam with rule metasgd."""
    if config.optimizer == "adam" and rule == "metasgd":
        raise ConfigError(f"{prefix}optimizer: adam would replace the meta-learned per-element rates of rule "
                          "metasgd; use optimizer sgd with it, or adam with rule sgd")
    names = list(names)
    for frozen in config.freeze:
        if not any(n.startswith(frozen) for n in names):
            raise ConfigError(f"{prefix}freeze: {frozen!r} is the prefix of no parameter (parameters: "
                              f"{', '.join(names)})")
    trained = TRAINED_BY_RULE[rule]
    chosen = [n for n in names if (trained is None or n.startswith(trained))
              and not any(n.startswith(frozen) for frozen in config.freeze)]
    if not chosen:
        raise ConfigError(f"{prefix}freeze: {config.freeze} freezes every parameter that rule {rule} trains")
    return chosen


def training_batches(train: list[Utterance], batch_seconds: float, rng: np.random.Generator) -> Iterator[list]:
    """Endless batches of at least `batch_seconds` of speech (an epoch's last one may hold less), each epoch a
    new permutation of the training part."""
    while True:
        batch, seconds = [], 0.0
        for index in rng.permutation(len(train)):
            batch.append(train[index])
            seconds += train[index].seconds
            if seconds >= batch_seconds:
                yield batch
                batch, seconds = [], 0.0
        if batch:
            yield batch


def held_out_scores(model, params: dict[str, torch.Tensor], held_set: TaskSet, losses, backend) -> tuple:
    """(loss, CER %, utterances with an infinite CTC loss) of the parameters on the held-out set. The CER is of
    the greedy decode, spaces counted. The objective zeroes infinite CTC losses, so a model whose scores blew up
    scores a perfect 0 there: the count of infinite ones (kept, not zeroed) shows it."""
    stacked = {n: v.detach().unsqueeze(0) for n, v in params.items()}
    with torch.no_grad():
        loss = float(losses(model, stacked, held_set, backend)[0])
        log_probs, lengths = model.functional_forward(stacked, held_set.feats, held_set.lengths)
        ctc = ctc_loss(log_probs[0].transpose(0, 1), held_set.targets[0], lengths[0], held_set.target_lengths[0],
                       reduction="none", backend=backend)
    hyps = greedy_decode(log_probs[0], lengths[0])
    refs = [t[:n].tolist() for t, n in zip(held_set.targets[0], held_set.target_lengths[0].tolist(), strict=True)]
    return loss, error_rate(zip(refs, hyps, strict=True)).rate, int((~torch.isfinite(ctc)).sum())


def better(candidate: Evaluation, best: Evaluation, criterion: str) -> bool:
    """Whether candidate beats best: lower CER (ties: lower loss), or lower loss."""
    if criterion == "loss" or candidate.cer == best.cer:
        return candidate.loss < best.loss - 1e-6
    return candidate.cer < best.cer


def make_update(config: AdaptConfig, rule: str, alphas, trainable: dict[str, torch.Tensor], masks):
    """update(grads, scale): one in-place step of the trainable tensors with the rate scaled by `scale`; masked
    entries (masks: name -> bool tensor, or None) stay zero."""
    adam = torch.optim.Adam(list(trainable.values()), lr=config.learning_rate) if config.optimizer == "adam" else None
    rates = {n: alphas[n] if rule == "metasgd" else config.learning_rate for n in trainable}

    def update(grads, scale):
        with torch.no_grad():
            if adam is not None:
                for tensor, grad in zip(trainable.values(), grads, strict=True):
                    tensor.grad = grad
                adam.param_groups[0]["lr"] = config.learning_rate * scale
                adam.step()
            else:
                for (name, tensor), grad in zip(trainable.items(), grads, strict=True):
                    tensor.sub_(scale * rates[name] * grad)
            for name in trainable.keys() & (masks or {}).keys():
                trainable[name].mul_(masks[name])
    return update


def clipped(grads: list[torch.Tensor], max_norm: float | None) -> tuple[list[torch.Tensor], float]:
    """The gradients scaled to at most max_norm (global norm), and their norm before scaling."""
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    if max_norm is not None and math.isfinite(norm) and norm > max_norm:
        grads = [g * (max_norm / norm) for g in grads]
    return grads, norm


def adapt(model, pool: list[Utterance], config: AdaptConfig, rule: str = "sgd", alphas=None,
          backend: str | None = None, masks: dict[str, torch.Tensor] | None = None,
          losses=task_losses, log: Callable[[str], None] | None = None,
          augment: Augmenter | None = None) -> AdaptResult:
    """Fine-tunes model's parameters on `config.minutes` of the pool. rule: "sgd" (all parameters), "head"
    (ANIL: the output head only), "input" (the input layers only: TRAINED_BY_RULE) or "metasgd" (per-element
    rates `alphas`, a dict of tensors).
    masks (name -> bool tensor): entries that stay zero after every step (a pruned model's fine-tune).
    losses(model, params, tasks, backend) -> (N,): the objective, trained and held out (default: CTC).
    log: receives one line per evaluation. augment: augments the training batches (never the held-out set),
    drawing from the run's seeded generator."""
    if rule not in RULES:
        raise ValueError(f"adaptation rule must be one of {list(RULES)}, got {rule!r}")
    if rule == "metasgd" and alphas is None:
        raise ValueError("the metasgd rule needs the meta-learned rates (alphas)")
    names = trainable_names(config, rule, model.params)
    log = log or (lambda _line: None)
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    train, held_out = budget_split(pool, config, rng)
    schedule = plan_schedule(config, sum(u.seconds for u in train))
    device = next(iter(model.params.values())).device
    held_set = collate([held_out], len(held_out)).to(device)
    params = {n: p.detach().clone().requires_grad_(n in names) for n, p in model.params.items()}
    trainable = {n: params[n] for n in names}
    update = make_update(config, rule, alphas, trainable, masks)
    result = AdaptResult({n: v.detach().clone() for n, v in params.items()}, [], schedule,
                         train_seconds=sum(u.seconds for u in train), held_out_seconds=sum(u.seconds for u in held_out),
                         train_utterances=len(train), held_out_utterances=len(held_out))

    def evaluate(step: int, stats: list[tuple[float, float, float]]) -> None:
        """Scores the parameters on the held-out set and records it (stats: loss, norm, scale of each step)."""
        loss, cer, infinite = held_out_scores(model, params, held_set, losses, backend)
        train_loss, grad_norm, scale = np.mean(stats, axis=0).tolist() if stats else (None, None, None)
        current = Evaluation(step, loss, cer, infinite, train_loss, grad_norm, scale)
        log(evaluation_line(current, schedule))
        _consider(result, current, params, config.criterion, config.divergence_factor)

    evaluate(0, [])
    batches = training_batches(train, schedule.batch_seconds, rng)
    augment_rng = np.random.default_rng([config.seed, 1])  # its own: batches are the same with and without it
    stats = []
    for step in range(1, schedule.planned_steps + 1):
        result.steps = step
        batch_set = collate([next(batches)], None, augment=augment, rng=augment_rng).to(device)
        objective = losses(model, {n: v.unsqueeze(0) for n, v in params.items()}, batch_set, backend)[0]
        grads, norm = clipped(list(torch.autograd.grad(objective, list(trainable.values()))), config.clip_grad_norm)
        loss = float(objective.detach())
        if not (math.isfinite(loss) and math.isfinite(norm)):
            result.stopped, result.diverged_at = "diverged", step
            result.divergence = f"training loss {loss} and gradient norm {norm} at step {step}"
            evaluate(step, stats)  # the parameters of the previous step
            break
        scale = schedule.rate_scale(step, config)
        update(grads, scale)
        stats.append((loss, norm, scale))
        if step % schedule.eval_every == 0 or step == schedule.planned_steps:
            evaluate(step, stats)
            stats = []
            if result.diverged:
                break
            if result.stale >= config.patience and schedule.earliest_stop <= step < schedule.planned_steps:
                result.stopped = "early"
                break
    result.wall_seconds = time.perf_counter() - start
    return result


def _consider(result: AdaptResult, current: Evaluation, params, criterion: str, divergence_factor: float) -> None:
    """Records an evaluation: a divergence, progress (a new lowest held-out loss or CER), new best parameters (a
    copy of `params`). The run stops at its first divergence: every earlier evaluation is a sound one."""
    earlier = result.evaluations
    divergence = held_out_divergence(current, earlier[0], divergence_factor) if earlier else ""
    if divergence and not result.diverged:
        result.stopped, result.diverged_at, result.divergence = "diverged", current.step, divergence
    if earlier and not divergence:
        if current.loss < min(e.loss for e in earlier) - 1e-6 or current.cer < min(e.cer for e in earlier):
            result.last_progress_step = current.step
        if better(current, result.best, criterion):
            result.params = {n: v.detach().clone() for n, v in params.items()}
            result.best_step = current.step
    earlier.append(current)


def held_out_divergence(current: Evaluation, initial: Evaluation, factor: float) -> str:
    """Why the held-out loss shows a divergence (not finite, or above factor x the initial one), or ""."""
    if not math.isfinite(current.loss):
        return f"held-out loss {current.loss} at step {current.step}"
    if current.infinite_ctc > initial.infinite_ctc:
        return (f"{current.infinite_ctc} held-out utterance(s) with an infinite CTC loss at step {current.step} "
                f"({initial.infinite_ctc} at step 0)")
    if math.isfinite(initial.loss) and current.loss > factor * initial.loss:
        return (f"held-out loss {current.loss:.4g} at step {current.step} above {factor:g} x the initial "
                f"{initial.loss:.4g}")
    return ""


def evaluation_line(evaluation: Evaluation, schedule: Schedule) -> str:
    line = (f"step {evaluation.step}/{schedule.planned_steps}: held-out loss {evaluation.loss:.4g}, "
            f"CER {evaluation.cer:.1f}%")
    if evaluation.train_loss is not None:
        line += f", training loss {evaluation.train_loss:.4g}, gradient norm {evaluation.grad_norm:.3g}"
    return line


def outcome_line(result: AdaptResult) -> str:
    """What the run did, in words: steps, why it stopped, the best step against the initial model."""
    best, initial = result.best, result.evaluations[0]
    how = {"early": f"stopped early after {result.steps} of {result.schedule.planned_steps} steps",
           "max_steps": f"ran all {result.steps} planned steps",
           "diverged": f"DIVERGED at step {result.diverged_at} ({result.divergence})"}[result.stopped]
    kept = ("kept the INITIAL (unadapted) parameters: no evaluation beat step 0" if result.kept_initial
            else f"kept step {best.step}")
    return (f"{how}; {kept}: held-out CER {best.cer:.1f}% (initial {initial.cer:.1f}%), loss {best.loss:.4g} "
            f"(initial {initial.loss:.4g})")
