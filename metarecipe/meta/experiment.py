"""A meta-training experiment directory: its config, checks before any work, the run, its outputs.

`exp_dir` receives config.yaml (the resolved config), cmd (the command line), versions.json (git revision and
library versions), tokens.txt, metrics.jsonl, ckpt/ (checkpoints), final.pt (the meta-trained model, with the
adaptation plan of its algorithm (metarecipe.meta.plan); Meta-SGD's rates in alphas.pt beside it), loss.png and, with
`tensorboard: true`, TensorBoard events in tensorboard/. Running again with the
same config resumes (with more train.steps, it goes on from the end); a run with a different config moves the
earlier one aside to `<exp_dir>.prev` (replacing an older one) and starts afresh. `algorithm: scratch` writes
the seeded initial model only (no steps): the from-scratch baseline.
The `augment:` section (metarecipe.features.augment.AugmentConfig) augments training meta-batches on the fly, by
default with speed perturbation and SpecAugment (and noise when augment.noise_dirs names recordings); held-out
batches are never augmented.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metarecipe.checkpoints import CheckpointDir
from metarecipe.config import ConfigError, as_dict, dump_yaml, read_yaml, require, require_at_least, require_positive
from metarecipe.data import read_data_dir
from metarecipe.devices import resolve_device
from metarecipe.errors import InputError
from metarecipe.features.augment import AugmentConfig
from metarecipe.io.atomic import atomic_path, write_atomic
from metarecipe.io.model_files import load_model, save_model, save_rates
from metarecipe.io.pools import check_feature_dim, frontend_of, load_pools
from metarecipe.meta.algorithms import ALGORITHMS, InnerLoop, make_algorithm
from metarecipe.meta.distributed import TaskGroup
from metarecipe.meta.sampling import check_task_seconds, make_augmenter
from metarecipe.meta.trainer import MetaTrainConfig, meta_train
from metarecipe.models import BatchedCTCModel, ModelConfig
from metarecipe.text.tokens import TokenTable

MODEL_SIZES = ("num_mel_bins", "conv_channels", "d_model", "gru_hidden", "gru_layers", "transformer_layers",
               "attention_heads", "feedforward_dim")


@dataclass
class DataConfig:
    train: list[str]  # data dirs of the source tasks, with features (compute-feats)
    held_out: list[str] = field(default_factory=list)  # data dirs whose query loss tracks progress
    tokens: str | None = None  # tokens.txt; default: every character of the train and held-out texts
    group_by: str = "lang"  # a task is a language, or any utt2<key> grouping (spk, accent...)


@dataclass
class MetaTrainExperiment:
    data: DataConfig
    algorithm: str = "fomaml"
    model: ModelConfig = field(default_factory=ModelConfig)
    inner: InnerLoop = field(default_factory=InnerLoop)
    train: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # of the training meta-batches
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    device: str = "cpu"  # cpu, cuda (under torchrun: each process's LOCAL_RANK GPU), cuda:N or auto
    tensorboard: bool = False  # also write TensorBoard events to exp_dir/tensorboard (pip install tensorboard)
    init: str | None = None  # a model file (same architecture and tokens) to start from, e.g. multilingual's

    def __post_init__(self):
        require(self.algorithm in ALGORITHMS, "algorithm", f"{self.algorithm!r} is not one of {sorted(ALGORITHMS)}")
        require_at_least(self, 1, "checkpoint_every", "keep_checkpoints")


def check(config: MetaTrainExperiment) -> None:
    """ConfigError for every value that cannot work, before any data is read (the dataclasses check their own
    ranges; the model's sizes and the inner loop's rate and steps are checked here)."""
    require_at_least(config.model, 0, "vocab_size", prefix="model.")
    require_at_least(config.model, 1, *MODEL_SIZES, prefix="model.")
    require_positive(config.inner, "lr", prefix="inner.")
    require_at_least(config.inner, 1, "steps", prefix="inner.")
    resolve_device(config.device)
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("tensorboard: true needs the tensorboard package (pip install tensorboard)")
    if not config.data.train:
        raise ConfigError("data.train: name at least one data directory")
    for directory in config.data.train + config.data.held_out:
        for needed in ("feats.scp", "utt2num_frames"):
            if not (Path(directory) / needed).exists():
                raise ConfigError(f"{Path(directory) / needed}: missing; run `metarecipe compute-feats {directory}`")


def token_table(config: MetaTrainExperiment) -> TokenTable:
    if config.data.tokens:
        return TokenTable.read(config.data.tokens)
    dirs = config.data.train + config.data.held_out
    return TokenTable.from_texts(text for d in dirs for text in read_data_dir(d).text.values())


def load_data(config: MetaTrainExperiment, tokens: TokenTable):
    """(source pools, held-out pools) by task; a task with a character outside the token table, or too little
    speech for the support and query sets of a meta-batch, is an error."""
    pools = load_pools(config.data.train, tokens, config.data.group_by)
    if not pools:
        raise ConfigError(f"data.train: no utterance with features in {', '.join(config.data.train)}")
    held_out = load_pools(config.data.held_out, tokens, config.data.group_by) if config.data.held_out else None
    unk = tokens.ids["<unk>"]
    for task, utts in {**pools, **(held_out or {})}.items():
        bad = next((u.utt for u in utts if unk in u.targets), None)
        if bad and config.data.tokens:
            raise ConfigError(f"task {task}: utterance {bad} has characters outside {config.data.tokens}")
    for key, checked in (("data.train", pools), ("data.held_out", held_out or {})):
        try:
            check_task_seconds(checked, config.train.support_seconds, config.train.query_seconds)
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from None
    return pools, held_out


def _versions() -> dict:
    root = Path(__file__).resolve().parents[2]
    try:
        revision = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        revision = None
    packages = {}
    for name in ("metarecipe", "torch", "numpy", "numba", "kaldiio", "soundfile"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {"git_revision": revision, "python": sys.version.split()[0], "packages": packages}


def _same_run(previous: dict, current: dict) -> bool:
    """Whether current continues previous: the same config but for the number of steps and TensorBoard."""
    def without_steps(config: dict) -> dict:
        train = config.get("train", {})
        return {**{k: v for k, v in config.items() if k != "tensorboard"},
                "train": {k: v for k, v in train.items() if k != "steps"} if isinstance(train, dict) else train}
    return without_steps(previous) == without_steps(current)


def set_aside(exp_dir: Path) -> Path:
    """Moves an experiment directory to `<exp_dir>.prev` (an older one there is removed); returns the new path."""
    aside = exp_dir.with_name(exp_dir.name + ".prev")
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(exp_dir, aside)
    return aside


def prepare_exp_dir(exp_dir: Path, config: MetaTrainExperiment, tokens: TokenTable, argv: list[str]) -> None:
    """Writes config, command, versions and tokens. A directory holding a run with another config (but for the
    steps) is moved aside first (set_aside), with one line on stderr saying so."""
    resolved = dump_yaml(config)
    previous = exp_dir / "config.yaml"
    if previous.exists() and not _same_run(read_yaml(previous), as_dict(config)):
        aside = set_aside(exp_dir)
        print(f"metarecipe: {exp_dir} held a run with another config: moved it to {aside}; starting afresh",
              file=sys.stderr)
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(previous, resolved.encode())
    write_atomic(exp_dir / "cmd", (" ".join(shlex.quote(a) for a in argv) + "\n").encode())
    write_atomic(exp_dir / "versions.json", json.dumps(_versions(), indent=1).encode())
    tokens.write(exp_dir / "tokens.txt")


def plot_losses(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in records if "loss" in r]
    ax.plot(steps, [r["loss"] for r in records if "loss" in r], label="meta-batch loss")
    held = [(r["step"], r["held_out_query_loss"]) for r in records if "held_out_query_loss" in r]
    if held:
        ax.plot(*zip(*held, strict=True), marker="o", label="held-out query loss")
    ax.set_xlabel("step")
    ax.set_ylabel("CTC loss")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def initial_model(config: MetaTrainExperiment, tokens: TokenTable) -> BatchedCTCModel:
    """A fresh model, or the parameters of config.init (ConfigError if its architecture or tokens differ)."""
    model = BatchedCTCModel(config.model)
    if not config.init:
        return model
    try:
        start, start_tokens, _ = load_model(config.init)
    except InputError as err:
        raise ConfigError(f"init: {err}") from err
    if not isinstance(start, BatchedCTCModel) or start.config != config.model:
        raise ConfigError(f"init: {config.init} has another architecture than model: ({start.config})")
    if list(start_tokens.symbols) != list(tokens.symbols):
        raise ConfigError(f"init: {config.init} has another token table than this run ({len(start_tokens)} vs "
                          f"{len(tokens)} tokens): give data.tokens={Path(config.init).parent / 'tokens.txt'}")
    with torch.no_grad():
        for name, p in model.params.items():
            p.copy_(start.params[name])
    return model


def run_experiment(config: MetaTrainExperiment, exp_dir, argv: list[str]) -> list[dict]:
    """Checks everything, then meta-trains (resuming from exp_dir/ckpt when there is a checkpoint)."""
    exp_dir = Path(exp_dir)
    check(config)
    tokens = token_table(config)
    if config.model.vocab_size not in (0, len(tokens)):
        raise ConfigError(f"model.vocab_size: {config.model.vocab_size} but the token table has {len(tokens)}")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=len(tokens)))
    pools, held_out = load_data(config, tokens)
    check_feature_dim({**pools, **(held_out or {})}, config.model.num_mel_bins, "model.num_mel_bins")
    augment = make_augmenter(config.augment, (u for utts in pools.values() for u in utts))
    torch.manual_seed(config.train.seed)
    model = initial_model(config, tokens).to(resolve_device(config.device))
    group = TaskGroup()
    if group.rank == 0:
        prepare_exp_dir(exp_dir, config, tokens, argv)
    algo = make_algorithm(config.algorithm, model, config.inner)
    records = [{"step": 0}]
    if algo.meta_trains:
        records = meta_train(algo, pools, config.train, held_out, exp_dir / "metrics.jsonl",
                             CheckpointDir(exp_dir / "ckpt", config.keep_checkpoints), config.checkpoint_every,
                             group, exp_dir / "tensorboard" if config.tensorboard else None, augment)
    if group.rank == 0:
        adaptation = algo.adaptation()
        if adaptation.alphas is not None:
            save_rates(exp_dir / "alphas.pt", adaptation.alphas)
        steps = config.train.steps if algo.meta_trains else 0
        save_model(exp_dir / "final.pt", model, tokens, {"algorithm": config.algorithm, "steps": steps},
                   frontend_of([u for utts in pools.values() for u in utts]), adaptation=adaptation.plan.record())
        if algo.meta_trains:
            plot_losses(records, exp_dir / "loss.png")
    return records

