"""The outer loop: meta-batches from the source tasks, an Adam step on each meta-gradient, and the query loss
of held-out tasks (after the algorithm's own inner-loop adaptation) as the measure of progress."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from metarecipe.meta.algorithms import MetaAlgorithm
from metarecipe.meta.sampling import TaskSampler, Utterance, draw_meta_batch
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


def held_out_query_loss(algo: MetaAlgorithm, batch: MetaBatch) -> float:
    """Mean query loss after the algorithm's inner loop on the support sets."""
    params = algo.adapt(batch.support, create_graph=False)
    with torch.no_grad():
        return float(task_losses(algo.model, params, batch.query, algo.inner.backend).mean())


def meta_train(algo: MetaAlgorithm, pools: dict[str, list[Utterance]], config: MetaTrainConfig,
               held_out: dict[str, list[Utterance]] | None = None, log_path=None) -> list[dict]:
    """Trains algo's meta-parameters on the tasks of `pools`; returns the log records (one per step, with
    "held_out_query_loss" every eval_every steps, at step 0 too), also appended to log_path as JSON lines."""
    rng = np.random.default_rng(config.seed)
    sampler = TaskSampler(pools, config.strategy)
    params = algo.meta_parameters()
    optimizer = torch.optim.Adam(params, lr=config.meta_lr)
    eval_batches = []
    if held_out:
        names = sorted(held_out)
        eval_batches = [draw_meta_batch(held_out, names, config.support_seconds, config.query_seconds, rng)
                        for _ in range(config.eval_batches)]
    records = []
    start = time.perf_counter()
    with open(log_path, "a") if log_path else contextlib.nullcontext() as log_file:

        def record(entry):
            if eval_batches and entry["step"] % config.eval_every == 0:
                entry["held_out_query_loss"] = float(np.mean([held_out_query_loss(algo, b) for b in eval_batches]))
            records.append(entry)
            if log_file:
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()

        record({"step": 0})
        progress = tqdm(range(1, config.steps + 1), desc=f"meta-train {type(algo).__name__}", leave=False)
        for step in progress:
            batch = draw_meta_batch(pools, sampler.sample(config.tasks_per_batch, rng), config.support_seconds,
                                    config.query_seconds, rng)
            loss, grads = algo.meta_gradient(batch)
            optimizer.zero_grad()
            for p, g in zip(params, grads, strict=True):
                p.grad = None if g is None else g.detach()
            norm = float(torch.nn.utils.clip_grad_norm_(params, config.clip_norm))
            optimizer.step()
            progress.set_postfix(loss=f"{float(loss):.3f}")
            record({"step": step, "loss": float(loss), "grad_norm": norm, "seconds": time.perf_counter() - start})
    return records
