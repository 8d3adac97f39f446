"""The outer loop: meta-batches from the source tasks (augmented, with an Augmenter), an Adam step on each
meta-gradient, and the query loss of held-out tasks (after the algorithm's own inner-loop adaptation, never
augmented) as the measure of progress."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from metarecipe.checkpoints import CheckpointDir
from metarecipe.config import require, require_at_least, require_positive
from metarecipe.features.augment import Augmenter
from metarecipe.io.atomic import write_atomic
from metarecipe.io.pools import Utterance
from metarecipe.meta.algorithms import MetaAlgorithm
from metarecipe.meta.distributed import TaskGroup
from metarecipe.meta.sampling import STRATEGIES, TaskSampler, draw_meta_batch
from metarecipe.meta.tasks import MetaBatch, task_losses


@dataclass(frozen=True)
class MetaTrainConfig:
    steps: int = 1000
    tasks_per_batch: int = 4
    support_seconds: float = 20.0
    query_seconds: float = 20.0
    meta_lr: float = 1e-3
    strategy: str = "uniform"  # task sampling (metarecipe.meta.sampling.TaskSampler)
    eval_every: int = 50
    eval_batches: int = 2  # fixed held-out meta-batches, drawn once
    clip_norm: float = 5.0
    seed: int = 0

    def __post_init__(self):
        require_at_least(self, 1, "steps", "tasks_per_batch", "eval_every")
        require_at_least(self, 0, "eval_batches")
        require_positive(self, "support_seconds", "query_seconds", "meta_lr", "clip_norm")
        require(self.strategy in STRATEGIES, "strategy", f"must be one of {list(STRATEGIES)}, got {self.strategy!r}")


def held_out_query_loss(algo: MetaAlgorithm, batch: MetaBatch) -> float:
    """Mean query loss after the algorithm's inner loop on the support sets."""
    params = algo.adapt(batch.support, create_graph=False)
    with torch.no_grad():
        return float(task_losses(algo.model, params, batch.query, algo.inner.backend).mean())


def _draw(pools, sampler: TaskSampler, config: MetaTrainConfig, step: int, device,
          augment: Augmenter | None = None) -> MetaBatch:
    """The meta-batch of a step, augmented too: a function of (seed, step) alone, so a resumed or distributed run
    draws the same."""
    rng = np.random.default_rng([config.seed, step])
    return draw_meta_batch(pools, sampler.sample(config.tasks_per_batch, rng), config.support_seconds,
                           config.query_seconds, rng, augment).to(device)


def _write_log(log_path: Path, records: list[dict]) -> None:
    """The metrics file holds exactly `records` (lines of a killed run after its last checkpoint go)."""
    write_atomic(log_path, "".join(json.dumps(r) + "\n" for r in records).encode())


def meta_train(algo: MetaAlgorithm, pools: dict[str, list[Utterance]], config: MetaTrainConfig,
               held_out: dict[str, list[Utterance]] | None = None, log_path=None,
               checkpoints: CheckpointDir | None = None, checkpoint_every: int = 0,
               group: TaskGroup | None = None, tensorboard_dir=None, augment: Augmenter | None = None) -> list[dict]:
    """Trains algo's meta-parameters on the tasks of `pools`; returns the log records (one per step, with
    "held_out_query_loss" every eval_every steps, at step 0 too, and "train_seconds", the seconds spent on
    training steps so far, held-out evaluation excluded), also written to log_path as JSON lines.

    With `checkpoints`, the state (meta-parameters, optimiser, log) is saved every `checkpoint_every` steps and
    at the end, and a run resumes from the newest complete checkpoint: as the meta-batch of a step depends on
    (seed, step) only, a resumed run repeats the uninterrupted one step for step. With a `group` of processes
    (torch.distributed), each process computes the meta-gradient of its share of each meta-batch's tasks and one
    all-reduce combines them (metarecipe.meta.distributed); only rank 0 writes logs and checkpoints. Batches go to
    the device of the meta-parameters. With `tensorboard_dir`, every record is also a TensorBoard scalar. With
    `augment`, the support and query sets of training meta-batches are augmented (held-out ones never are)."""
    group = group or TaskGroup()
    sampler = TaskSampler(pools, config.strategy)
    params = algo.meta_parameters()
    device = params[0].device
    optimizer = torch.optim.Adam(params, lr=config.meta_lr)
    eval_batches = []
    if held_out:
        rng = np.random.default_rng([config.seed, 2**32 - 1])
        eval_batches = [draw_meta_batch(held_out, sorted(held_out), config.support_seconds, config.query_seconds,
                                        rng).to(device) for _ in range(config.eval_batches)]
    records: list[dict] = []
    resumed = checkpoints.latest() if checkpoints is not None else None
    if resumed is not None:
        _, state = resumed
        algo.load_state_dict(state["algorithm"])
        optimizer.load_state_dict(state["optimizer"])
        records = state["records"]
    writer = group.rank == 0
    log_path = Path(log_path) if log_path and writer else None
    if log_path:
        _write_log(log_path, records)

    def save():
        if checkpoints is not None and writer:
            checkpoints.save(records[-1]["step"], {"algorithm": algo.state_dict(), "optimizer":
                                                   optimizer.state_dict(), "records": records})

    events = None
    if tensorboard_dir is not None and writer:
        from torch.utils.tensorboard import SummaryWriter

        events = SummaryWriter(str(tensorboard_dir))
    with open(log_path, "a") if log_path else contextlib.nullcontext() as log_file:

        def record(entry):
            if eval_batches and entry["step"] % config.eval_every == 0:
                entry["held_out_query_loss"] = float(np.mean([held_out_query_loss(algo, b) for b in eval_batches]))
            records.append(entry)
            for key, value in entry.items() if events else ():
                if key != "step":
                    events.add_scalar(key, value, entry["step"])
            if log_file:
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()

        if not records:
            record({"step": 0})
        first = records[-1]["step"] + 1
        progress = tqdm(range(first, config.steps + 1), desc=f"meta-train {type(algo).__name__}", leave=False,
                        initial=first - 1, total=config.steps, disable=not writer)
        trained = records[-1].get("train_seconds", 0.0)
        for step in progress:
            started = time.perf_counter()
            loss, grads = group.meta_gradient(algo, _draw(pools, sampler, config, step, device, augment))
            optimizer.zero_grad()
            for p, g in zip(params, grads, strict=True):
                p.grad = None if g is None else g.detach()
            norm = float(torch.nn.utils.clip_grad_norm_(params, config.clip_norm))
            optimizer.step()
            trained += time.perf_counter() - started
            progress.set_postfix(loss=f"{float(loss):.3f}")
            record({"step": step, "loss": float(loss), "grad_norm": norm, "train_seconds": round(trained, 3)})
            if checkpoint_every and step % checkpoint_every == 0 and step < config.steps:
                save()
    if events:
        events.close()
    if not resumed or resumed[0] < config.steps:
        save()
    return records
