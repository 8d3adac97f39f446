"""The outer loop on real features: Adam steps on meta-gradients, held-out query loss, JSON-lines log."""

import json

import torch
from test_adapt import small_model, target  # noqa: F401  (module fixture: real features of a CV release)

from metarecipe.meta import InnerLoop, make_algorithm
from metarecipe.meta.trainer import MetaTrainConfig, meta_train


def test_meta_training_logs_steps_and_held_out_query_loss_and_moves_parameters(target, tmp_path):  # noqa: F811
    tokens, pool = target
    half = len(pool) // 2
    sources, held_out = {"a": pool[:half], "b": pool[half:]}, {"c": pool[half:]}
    model = small_model(tokens)
    before = {n: p.detach().clone() for n, p in model.params.items()}
    config = MetaTrainConfig(steps=4, tasks_per_batch=2, support_seconds=0.4, query_seconds=0.4, meta_lr=1e-2,
                             eval_every=2, eval_batches=1)
    records = meta_train(make_algorithm("fomaml", model, InnerLoop(lr=0.1)), sources, config, held_out,
                         tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["step"] for r in records if "held_out_query_loss" in r] == [0, 2, 4]
    assert all(r["loss"] > 0 and r["grad_norm"] > 0 for r in records[1:])
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == records
    assert any(not torch.equal(before[n], p.detach()) for n, p in model.params.items())
