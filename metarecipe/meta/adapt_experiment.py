"""An adaptation experiment: a meta-trained model file, a target data dir and a budget in minutes.

Everything that cannot work is found before anything is written: an unknown rule, an unreadable model, a data
dir without features, target characters missing from the model's token table, a budget larger than the data, a
GPU asked for where there is none, a freeze prefix that names no parameter, adam with rule metasgd. Rules: sgd
(all parameters), head (ANIL), metasgd (the meta-learned rates in alphas.pt beside the model file), pnn (a new
progressive column with laterals to the frozen model). With `scratch: true` the model file gives only the
architecture and token table: training starts from a fresh initialisation (the `scratch` baseline). The
`augment:` section (metarecipe.features.augment.AugmentConfig; on by default) augments the training batches,
never the held-out slice.
`data` may also be a folder of one speaker's recordings with one transcript file (metarecipe.data.folder): its
lines are checked first (bad ones reported and left out), then, once the experiment dir is prepared, it becomes
the data dir `exp_dir/data` with features made with the model file's front end (transcripts normalised in
`lang` where given). adapt.minutes may then be left out (FOLDER_MINUTES), and a folder with less speech than
the budget is adapted on all of it (one line says so); the held-out slice is drawn from it as from any budget.
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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from metarecipe.config import ConfigError, apply_override, from_mapping, read_yaml
from metarecipe.data.folder import read_folder, recordings_folder, write_folder_data_dir
from metarecipe.devices import resolve_device
from metarecipe.errors import InputError
from metarecipe.features.augment import AugmentConfig
from metarecipe.io.atomic import write_atomic
from metarecipe.io.model_files import ModelFile, load_rates, read_model_file, save_model
from metarecipe.io.pools import FRAME_SHIFT, check_feature_dim, frontend_of, load_pools
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

FOLDER_MINUTES = 60.0  # the budget of a folder of recordings without adapt.minutes: all its speech, up to an hour


@dataclass
class AdaptExperiment:
    model: str  # model file, e.g. exp/meta/final.pt
    data: str  # the target's training data dir (features; never dev or test), or a folder of recordings
    adapt: AdaptConfig
    rule: str | None = None  # one of RULE_OPTIONS; default: the meta-learner's plan, stored in the model file
    scratch: bool = False  # fresh parameters (seeded by adapt.seed) of the model file's architecture
    device: str = "cpu"  # cpu, cuda, cuda:N or auto
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # of the training batches (never held out)
    lang: str | None = None  # a folder's transcripts: normalised in this language; None: lower case, no punctuation


def load_experiment(path=None, overrides=()) -> AdaptExperiment:
    """The experiment of a YAML config (or none) and key=value overrides, as load_config reads it; with a folder
    of recordings as `data`, adapt.minutes defaults to FOLDER_MINUTES."""
    values = read_yaml(path) if path is not None else {}
    for override in overrides:
        apply_override(values, override)
    section = values.get("adapt", {})
    if recordings_folder(values.get("data")) is not None and isinstance(section, dict) and "minutes" not in section:
        values["adapt"] = {**section, "minutes": FOLDER_MINUTES}
    return from_mapping(AdaptExperiment, values, None if path is None else str(path))


def target_pool(data: str, tokens, config: AdaptConfig, num_mel_bins: int, key: str = "adapt.minutes") -> list:
    """The utterances of a target data dir, or ConfigError when it has no features, features of another size
    than the model's num_mel_bins, characters outside the token table, or a budget (`config.minutes`) it cannot
    fill with a training and a held-out part (`key`: the option named in that error)."""
    pools = load_pools([data], tokens, group_by=None)
    check_feature_dim(pools, num_mel_bins, str(data))
    pool = [u for utts in pools.values() for u in utts]
    unknown = next((u for u in pool if tokens.ids["<unk>"] in u.targets), None)
    if unknown:
        recording = f" (recording {unknown.source.spec})" if unknown.source is not None else ""
        raise ConfigError(f"{data}: utterance {unknown.utt}{recording} has characters outside the model's token "
                          f"table ({len(tokens)} tokens): use a model whose tokens cover the target language")
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


def _checked_model(config: AdaptExperiment):
    """(model to adapt, its model file, plan, alphas, device) or ConfigError naming the key, path or number."""
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
    return model, loaded, plan, alphas, device


def folder_target(config: AdaptExperiment, folder: Path, loaded: ModelFile, exp_dir: Path,
                  argv: list[str]) -> tuple[str, AdaptConfig]:
    """The data dir and budget of a folder of recordings: its lines checked and its audio decoded; then the
    experiment dir prepared (an earlier run with another config moves aside before the data dir goes in) and
    exp_dir/data written with the model file's front end. The budget is all of the folder's speech where it
    holds less than adapt.minutes."""
    if loaded.frontend is None:
        raise ConfigError(f"model: {config.model} holds no feature front end (fbank settings, CMVN mode), which a "
                          "folder of recordings needs to make its features as in training; give a model file "
                          "that meta-train or adapt wrote")
    recordings = read_folder(folder, loaded.tokens, config.lang, loaded.frontend.fbank.sample_rate)
    if len(recordings) < 2:
        raise ConfigError(f"data: {folder} has {len(recordings)} usable recording, too few to adapt: one part of "
                          "the recordings trains, another is held out to choose the parameters")
    prepare_exp_dir(exp_dir, config, loaded.tokens, argv)
    seconds = write_folder_data_dir(recordings, exp_dir / "data", loaded.frontend)["frames"] * FRAME_SHIFT
    budget = config.adapt
    if budget.minutes * 60 > seconds:
        print(f"{folder}: {seconds / 60:.2f} min of speech, less than the budget of {budget.minutes:g} min: adapting "
              "on all of it", flush=True)
        budget = replace(budget, minutes=(seconds - FRAME_SHIFT / 2) / 60)  # every utterance, never more
    return str(exp_dir / "data"), budget


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
    model, loaded, plan, alphas, device = _checked_model(config)
    tokens, info = loaded.tokens, loaded.info
    data, budget = config.data, config.adapt
    folder = recordings_folder(config.data)
    if folder is not None:
        data, budget = folder_target(config, folder, loaded, exp_dir, argv)
    elif config.lang is not None:
        raise ConfigError(f"lang: normalises the transcripts of a folder of recordings; {config.data} is a data dir "
                          "(its text is normalised already)")
    pool = target_pool(data, tokens, budget, model.config.num_mel_bins)
    model = model.to(device)
    alphas = {n: a.to(device) for n, a in alphas.items()} if alphas is not None else None
    augment = make_augmenter(config.augment, pool)
    prepare_exp_dir(exp_dir, config, tokens, argv)
    result = adapt(model, pool, budget, plan.rule, alphas, log=lambda line: print(line, flush=True),
                   augment=augment)
    with torch.no_grad():
        for name, value in result.params.items():
            model.params[name].copy_(value)
    history = "".join(json.dumps(e.record()) + "\n" for e in result.evaluations)
    write_atomic(exp_dir / "history.jsonl", history.encode())
    write_atomic(exp_dir / "adapt.json", (json.dumps(summary(result, budget, plan.name), indent=1) + "\n").encode())
    # adapting the adapted model again trains it as it is (Meta-SGD's rates stay beside the meta-trained model)
    again = AdaptationPlan("sgd" if plan.rule == "metasgd" else plan.rule)
    record = {**info, "adapted_on": str(folder or data), "rule": plan.name, "scratch": config.scratch,
              "minutes": budget.minutes}
    save_model(exp_dir / "adapted.pt", model, tokens, record, frontend_of(pool), adaptation=again.record())
    if result.diverged or result.kept_initial:
        print(f"metarecipe: warning: {exp_dir}: {outcome_line(result)}", file=sys.stderr, flush=True)
    return result
