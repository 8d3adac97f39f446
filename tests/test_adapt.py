"""Adaptation on a budget of minutes: early stopping on held-out data, the algorithms' own update rules."""

import numpy as np
import pytest
import torch
from test_commonvoice import make_release

from metarecipe.data import read_data_dir
from metarecipe.data.corpora import get_corpus
from metarecipe.features import compute_feats
from metarecipe.io.pools import Utterance, load_pools
from metarecipe.meta.adapt import AdaptConfig, adapt, budget_split
from metarecipe.models import BatchedCTCModel, ModelConfig
from metarecipe.text.tokens import TokenTable


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapt")
    written = get_corpus("commonvoice")(make_release(tmp / "cv", "cv-21.0"), tmp / "data", splits=("train",))
    compute_feats(written["de/train"], nj=1, progress=False)
    tokens = TokenTable.from_texts(read_data_dir(written["de/train"]).text.values())
    return tokens, load_pools([written["de/train"]], tokens)["de"]


def small_model(tokens, seed=0):
    torch.manual_seed(seed)
    return BatchedCTCModel(ModelConfig(vocab_size=len(tokens), conv_channels=4, d_model=16, gru_hidden=8,
                                       gru_layers=1))


def test_adaptation_keeps_the_best_held_out_parameters(target):
    tokens, pool = target
    model = small_model(tokens)
    result = adapt(model, pool, AdaptConfig(minutes=0.035, lr=0.5, max_steps=30, eval_every=2, criterion="loss"))
    losses = [loss for _, loss in result.history]
    assert min(losses) < losses[0]  # adaptation helps on data it did not train on
    assert 0 < result.held_out_seconds < result.train_seconds + result.held_out_seconds <= 0.035 * 60 + 0.7
    changed = any(not torch.equal(result.params[n], p.detach()) for n, p in model.params.items())
    assert changed


def test_head_rule_adapts_only_the_head_and_equals_metasgd_with_zero_rates_elsewhere(target):
    tokens, pool = target
    model = small_model(tokens, seed=1)
    config = AdaptConfig(minutes=0.035, lr=0.3, max_steps=6, eval_every=3, patience=10, clip_grad_norm=None,
                         criterion="loss")  # clipping scales by the norm of every gradient the rule takes
    head = adapt(model, pool, config, rule="head")
    for name, p in model.params.items():
        assert torch.equal(head.params[name], p.detach()) == (not name.startswith("head_"))
    alphas = {n: torch.full_like(p, 0.3 if n.startswith("head_") else 0.0) for n, p in model.params.items()}
    metasgd = adapt(model, pool, config, rule="metasgd", alphas=alphas)
    for name in model.params:
        torch.testing.assert_close(metasgd.params[name], head.params[name])


def test_input_rule_adapts_only_the_input_layers_and_equals_metasgd_with_zero_rates_elsewhere(target):
    tokens, pool = target
    model = small_model(tokens, seed=2)
    config = AdaptConfig(minutes=0.035, lr=0.3, max_steps=6, eval_every=3, patience=10, clip_grad_norm=None,
                         criterion="loss")
    adapted = adapt(model, pool, config, rule="input")
    inputs = ("conv1_", "conv2_", "proj_")
    for name, p in model.params.items():
        assert torch.equal(adapted.params[name], p.detach()) == (not name.startswith(inputs))
    alphas = {n: torch.full_like(p, 0.3 if n.startswith(inputs) else 0.0) for n, p in model.params.items()}
    metasgd = adapt(model, pool, config, rule="metasgd", alphas=alphas)
    for name in model.params:
        torch.testing.assert_close(metasgd.params[name], adapted.params[name])


def test_a_budget_never_draws_an_utterance_longer_than_itself():
    """Real prompts run from 1 s to 40 s: a 15 s budget must not be one 40 s prompt."""
    pool = [Utterance(f"long{i}", "x.ark:0", 4000, [1]) for i in range(5)]  # 40 s each
    pool += [Utterance(f"short{i}", "x.ark:0", 200, [1]) for i in range(40)]  # 2 s each
    for seed in range(20):
        train, held_out = budget_split(pool, AdaptConfig(minutes=0.25), np.random.default_rng(seed))
        assert all(u.utt.startswith("short") for u in train + held_out)
        assert 15.0 <= sum(u.seconds for u in train + held_out) < 17.0
    with pytest.raises(ValueError, match="utterances no longer than the budget hold only 0.17 min"):
        budget_split(pool[:10], AdaptConfig(minutes=0.25), np.random.default_rng(0))
    with pytest.raises(ValueError, match="a budget of 0.0333333 min holds 1 utterance"):  # one 2 s utterance
        budget_split(pool[5:], AdaptConfig(minutes=2 / 60), np.random.default_rng(0))


def test_budget_beyond_the_data_is_a_clear_error(target):
    _, pool = target
    with pytest.raises(ValueError, match="budget of 5 min exceeds the 0.04 min of target training data"):
        budget_split(pool, AdaptConfig(minutes=5), np.random.default_rng(0))
