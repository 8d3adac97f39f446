"""An adaptation experiment: a meta-trained model file, a target data dir and a budget in minutes.

Everything that cannot work is found before anything is written: an unknown rule, an unreadable model, a data
dir without features, target characters missing from the model's token table, a budget larger than the data, a
GPU asked for where there is none, a freeze prefix that names no parameter, adam with rule metasgd. Rules: sgd
(all parameters), head (ANIL), metasgd (the meta-learned rates in alphas.pt beside the model file), pnn (a new
progressive column with laterals to the frozen model). With `scratch: true` the model file gives only the
architecture and token table: training starts from a fresh initialisation (the `scratch` baseline). The
`augment:` section (metarecipe.features.augment.AugmentConfig; on by default) augments the training batches,
never the held-out slice.
`exp_dir` receives config.yaml, cmd, versions.json, history.jsonl (per evaluation: the step, held-out loss and
CER, held-out utterances with an infinite CTC loss, mean training loss, gradient norm and rate factor since the
previous one; non-finite numbers as null), adapt.json (the run in one object: steps run and planned, the best
step, held-out loss and CER of the initial, best and final parameters, whether, where and why it diverged, why
it stopped, whether it kept the initial model, the budget's seconds and utterances, wall seconds, optimizer, lr
(null where Meta-SGD's learned rates are the rates) and rule) and adapted.pt (the best parameters). One line per
evaluation goes to stdout; a run that diverged or kept the initial model says so in a warning line on stderr.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from metarecipe.config import ConfigError
from metarecipe.devices import resolve_device
from metarecipe.errors import InputError
from metarecipe.features.augment import AugmentConfig
from metarecipe.io.atomic import write_atomic
from metarecipe.io.model_files import load_rates, read_model_file, save_model
from metarecipe.io.pools import check_feature_dim, frontend_of, load_pools
from metarecipe.meta.adapt import (
    AdaptConfig,
    AdaptResult,
    adapt,
    budget_split,
    finite_or_none,
    outcome_line,
    trainable_names,
)
from metarecipe.meta.experiment import prepare_exp_dir
from metarecipe.meta.plan import AdaptationPlan, model_to_adapt
from metarecipe.meta.sampling import make_augmenter


@dataclass
class AdaptExperiment:
    model: str  # model file, e.g. exp/meta/final.pt
    data: str  # the target's training data dir (features); the budget is drawn from it, never from dev or test
    adapt: AdaptConfig
    rule: str | None = None  # one of RULE_OPTIONS; default: the meta-learner's plan, stored in the model file
    scratch: bool = False  # fresh parameters (seeded by adapt.seed) of the model file's architecture
    device: str = "cpu"  # cpu, cuda, cuda:N or auto
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # of the training batches (never held out)


def target_pool(data: str, tokens, config: AdaptConfig, num_mel_bins: int, key: str = "adapt.minutes") -> list:
    """The utterances of a target data dir, or ConfigError when it has no features, features of another size
    than the model's num_mel_bins, characters outside the token table, or a budget (`config.minutes`) it cannot
    fill with a training and a held-out part (`key`: the option named in that error)."""
    pools = load_pools([data], tokens, group_by=None)
    check_feature_dim(pools, num_mel_bins, str(data))
    pool = [u for utts in pools.values() for u in utts]
    unknown = next((u.utt for u in pool if tokens.ids["<unk>"] in u.targets), None)
    if unknown:
        raise ConfigError(f"{data}: utterance {unknown} has characters outside the model's token table "
                          f"({len(tokens)} tokens): use a model whose tokens cover the target language")
    try:
        budget_split(pool, config, np.random.default_rng(config.seed))  # the split adapt will draw
    except ConfigError as err:
        raise ConfigError(f"{key}: {err} ({data})") from None
    return pool


def adaptation_plan(config: AdaptExperiment, stored: AdaptationPlan) -> AdaptationPlan:
    """The experiment's plan: a fresh model with scratch, else the config's rule, else the model file's plan."""
    if config.scratch:
        if config.rule not in (None, "sgd"):
            raise ConfigError(f"rule: scratch training uses sgd, got {config.rule!r}")
        return AdaptationPlan("sgd", fresh=True)
    return AdaptationPlan.from_option(config.rule) if config.rule is not None else stored


def _checked_inputs(config: AdaptExperiment):
    """(model to adapt, tokens, info, plan, alphas, pool, augmenter) or ConfigError naming the key, path or
    number."""
    if config.rule is not None:
        AdaptationPlan.from_option(config.rule)  # an unknown rule fails before the model is read
    device = resolve_device(config.device)
    try:
        loaded = read_model_file(config.model)
    except InputError as err:
        raise ConfigError(f"model: {err}") from err
    if loaded.is_compact:
        raise ConfigError(f"model: {config.model} is a compact (compressed) model, which adapt cannot train; give "
                          "the model it was compressed from")
    plan = adaptation_plan(config, AdaptationPlan.stored(loaded.adaptation, loaded.info, config.model))
    try:
        model = model_to_adapt(loaded.model, plan, config.adapt.seed)
    except ConfigError as err:
        raise ConfigError(f"{err} ({config.model})") from None
    alphas = None
    if plan.rule == "metasgd":
        alphas_path = Path(config.model).with_name("alphas.pt")
        if not alphas_path.exists():
            raise ConfigError(f"rule: metasgd needs the meta-learned rates, {alphas_path} is missing")
        alphas = load_rates(alphas_path, model)
    trainable_names(config.adapt, plan.rule, model.params, "adapt.")
    pool = target_pool(config.data, loaded.tokens, config.adapt, model.config.num_mel_bins)
    model = model.to(device)
    alphas = {n: a.to(device) for n, a in alphas.items()} if alphas is not None else None
    augment = make_augmenter(config.augment, pool)
    return model, loaded.tokens, loaded.info, plan, alphas, pool, augment


def summary(result: AdaptResult, config: AdaptConfig, rule: str) -> dict:
    """adapt.json: the run in one object (non-finite numbers as null)."""
    def scores(evaluation):
        return {"loss": finite_or_none(evaluation.loss), "cer": finite_or_none(evaluation.cer)}
    learned_rates = rule == "metasgd" and config.optimizer == "sgd"
    return {"steps": result.steps, "planned_steps": result.schedule.planned_steps, "best_step": result.best_step,
            "initial": scores(result.evaluations[0]), "best": scores(result.best),
            "final": scores(result.evaluations[-1]), "diverged": result.diverged, "diverged_at": result.diverged_at,
            "divergence": result.divergence or None, "stopped": result.stopped, "kept_initial": result.kept_initial,
            "criterion": config.criterion, "train_seconds": result.train_seconds,
            "held_out_seconds": result.held_out_seconds, "train_utterances": result.train_utterances,
            "held_out_utterances": result.held_out_utterances, "batch_seconds": result.schedule.batch_seconds,
            "wall_seconds": round(result.wall_seconds, 2), "optimizer": config.optimizer,
            "lr": None if learned_rates else config.learning_rate, "rule": rule}


def run_adaptation(config: AdaptExperiment, exp_dir, argv: list[str]) -> AdaptResult:
    exp_dir = Path(exp_dir)
    model, tokens, info, plan, alphas, pool, augment = _checked_inputs(config)
    prepare_exp_dir(exp_dir, config, tokens, argv)
    result = adapt(model, pool, config.adapt, plan.rule, alphas, log=lambda line: print(line, flush=True),
                   augment=augment)
    with torch.no_grad():
        for name, value in result.params.items():
            model.params[name].copy_(value)
    history = "".join(json.dumps(e.record()) + "\n" for e in result.evaluations)
    write_atomic(exp_dir / "history.jsonl", history.encode())
    write_atomic(exp_dir / "adapt.json", (json.dumps(summary(result, config.adapt, plan.name), indent=1) + "\n")
                 .encode())
    # adapting the adapted model again trains it as it is (Meta-SGD's rates stay beside the meta-trained model)
    again = AdaptationPlan("sgd" if plan.rule == "metasgd" else plan.rule)
    save_model(exp_dir / "adapted.pt", model, tokens, {**info, "adapted_on": config.data, "rule": plan.name,
                                                       "scratch": config.scratch, "minutes": config.adapt.minutes},
               frontend_of(pool), adaptation=again.record())
    if result.diverged or result.kept_initial:
        print(f"metarecipe: warning: {exp_dir}: {outcome_line(result)}", file=sys.stderr, flush=True)
    return result
