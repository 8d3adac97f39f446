"""An adaptation experiment: a meta-trained model file, a target data dir and a budget in minutes.

Everything that cannot work is found before anything is written: an unknown rule, an unreadable model, a data
dir without features, target characters missing from the model's token table, a budget larger than the data, a
GPU asked for where there is none. Rules: sgd (all parameters), head (ANIL), metasgd (the meta-learned rates
in alphas.pt beside the model file), pnn (a new progressive column with laterals to the frozen model). With
`scratch: true` the model file gives only the architecture and token table: training starts from a fresh
initialisation (the `scratch` baseline).
`exp_dir` receives config.yaml, cmd, versions.json, history.jsonl (held-out loss per evaluation) and adapted.pt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from metarecipe.checkpoints import write_atomic
from metarecipe.config import ConfigError
from metarecipe.devices import resolve_device
from metarecipe.meta.adapt import AdaptConfig, AdaptResult, adapt
from metarecipe.meta.experiment import prepare_exp_dir
from metarecipe.meta.sampling import load_pools
from metarecipe.models import BatchedCTCModel, ProgressiveCTCModel
from metarecipe.models.checkpoint import load_model, save_model

RULES = ("sgd", "head", "metasgd", "pnn")


@dataclass
class AdaptExperiment:
    model: str  # model file, e.g. exp/meta/final.pt
    data: str  # the target's training data dir (features); the budget is drawn from it, never from dev or test
    adapt: AdaptConfig
    rule: str | None = None  # sgd, head, metasgd or pnn; default: the meta-learner's, stored with the model
    scratch: bool = False  # fresh parameters (seeded by adapt.seed) of the model file's architecture
    device: str = "cpu"  # cpu, cuda, cuda:N or auto


def target_pool(data: str, tokens, minutes: float, key: str = "adapt.minutes") -> list:
    """The utterances of a target data dir, or ConfigError when it has no features, holds characters outside
    the token table or fewer than `minutes` of speech (`key`: the option named in that error)."""
    for needed in ("feats.scp", "utt2num_frames"):
        if not (Path(data) / needed).exists():
            raise ConfigError(f"{Path(data) / needed}: missing; run `metarecipe compute-feats {data}`")
    pool = [u for utts in load_pools([data], tokens).values() for u in utts]
    unknown = next((u.utt for u in pool if tokens.ids["<unk>"] in u.targets), None)
    if unknown:
        raise ConfigError(f"{data}: utterance {unknown} has characters outside the model's token table "
                          f"({len(tokens)} tokens): use a model whose tokens cover the target language")
    available = sum(u.seconds for u in pool) / 60
    if minutes > available:
        raise ConfigError(f"{key}: a budget of {minutes:g} min exceeds the {available:.2f} min of training data "
                          f"in {data}")
    return pool


def _checked_inputs(config: AdaptExperiment):
    """(model, tokens, info, rule, alphas, pool) or ConfigError naming the key, path or number."""
    if config.rule is not None and config.rule not in RULES:
        raise ConfigError(f"rule: must be one of {list(RULES)}, got {config.rule!r}")
    device = resolve_device(config.device)
    try:
        model, tokens, info = load_model(config.model)
    except (ValueError, OSError) as err:
        raise ConfigError(f"model: {err}") from err
    rule = "sgd" if config.scratch else config.rule or info.get("rule", "sgd")
    if config.scratch and config.rule not in (None, "sgd"):
        raise ConfigError(f"rule: scratch training uses sgd, got {config.rule!r}")
    if config.scratch:
        torch.manual_seed(config.adapt.seed)
        model = BatchedCTCModel(model.config)
    elif rule == "pnn":
        if not isinstance(model, BatchedCTCModel):
            raise ConfigError(f"rule: pnn grows a column on a plain model; {config.model} is already progressive")
        model = ProgressiveCTCModel([model])
    alphas = None
    if rule == "metasgd":
        alphas_path = Path(config.model).with_name("alphas.pt")
        if not alphas_path.exists():
            raise ConfigError(f"rule: metasgd needs the meta-learned rates, {alphas_path} is missing")
        alphas = torch.load(alphas_path, map_location="cpu", weights_only=True)
    pool = target_pool(config.data, tokens, config.adapt.minutes)
    model = model.to(device)
    alphas = {n: a.to(device) for n, a in alphas.items()} if alphas is not None else None
    return model, tokens, info, rule, alphas, pool


def run_adaptation(config: AdaptExperiment, exp_dir, argv: list[str]) -> AdaptResult:
    exp_dir = Path(exp_dir)
    model, tokens, info, rule, alphas, pool = _checked_inputs(config)
    prepare_exp_dir(exp_dir, config, tokens, argv)
    result = adapt(model, pool, config.adapt, "sgd" if rule == "pnn" else rule, alphas)
    with torch.no_grad():
        for name, value in result.params.items():
            model.params[name].copy_(value)
    history = "".join(json.dumps({"step": s, "held_out_loss": loss}) + "\n" for s, loss in result.history)
    write_atomic(exp_dir / "history.jsonl", history.encode())
    save_model(exp_dir / "adapted.pt", model, tokens, {**info, "adapted_on": config.data, "rule": rule,
                                                       "scratch": config.scratch, "minutes": config.adapt.minutes})
    return result
