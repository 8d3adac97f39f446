"""Progressive networks and the scratch baseline behind the algorithm interface."""

import pytest
import torch
from test_adapt import small_model, target  # noqa: F401  (module fixture: real features of a CV release)

from metarecipe.config import ConfigError
from metarecipe.meta import InnerLoop, make_algorithm
from metarecipe.meta.adapt import AdaptConfig, adapt
from metarecipe.meta.plan import AdaptationPlan, model_to_adapt
from metarecipe.models import BatchedCTCModel, ModelConfig, ProgressiveCTCModel

SMALL = ModelConfig(vocab_size=9, num_mel_bins=20, conv_channels=4, d_model=16, gru_hidden=8, gru_layers=2)


def inputs(n=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 48, 20, generator=gen), torch.randint(30, 49, (n, 3), generator=gen)


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
def test_a_new_column_copied_from_the_source_starts_at_the_source_model(encoder):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**SMALL.__dict__, "encoder": encoder, "transformer_layers": 2, "attention_heads": 2,
                         "feedforward_dim": 20})
    source = BatchedCTCModel(cfg)
    pnn = ProgressiveCTCModel([source])
    feats, lengths = inputs()
    expected = source.functional_forward(source.stacked(2), feats, lengths)[0]
    torch.testing.assert_close(pnn.functional_forward(pnn.stacked(2), feats, lengths)[0], expected)


def test_laterals_carry_the_frozen_columns_features_and_only_the_new_column_learns():
    torch.manual_seed(0)
    sources = [BatchedCTCModel(SMALL), BatchedCTCModel(SMALL)]
    pnn = ProgressiveCTCModel(sources, new_column="random")
    assert pnn.params["lat0_weight"].shape == (2 * 16, 16) and pnn.params["lat_head_weight"].shape == (2 * 16, 9)
    feats, lengths = inputs()
    out = pnn.functional_forward(pnn.stacked(2), feats, lengths)[0]
    out.square().sum().backward()
    assert all(p.grad is None for c in sources for p in c.params.values())  # frozen
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pnn.params.values())
    with torch.no_grad():
        sources[1].params["gru0_fw_w_hh"].mul_(-1)  # a frozen column's change reaches the output via laterals
    assert not torch.allclose(pnn.functional_forward(pnn.stacked(2), feats, lengths)[0], out)


def test_mismatched_columns_are_refused():
    other = BatchedCTCModel(ModelConfig(**{**SMALL.__dict__, "gru_hidden": 4}))
    with pytest.raises(ValueError, match="one configuration"):
        ProgressiveCTCModel([BatchedCTCModel(SMALL), other])


def test_pnn_adapts_a_new_column_on_real_features_and_scratch_starts_fresh(target):  # noqa: F811
    tokens, pool = target
    source = small_model(tokens)
    before = {n: p.detach().clone() for n, p in source.params.items()}
    plan = make_algorithm("pnn", source, InnerLoop()).adaptation().plan
    assert plan == AdaptationPlan("sgd", column="source") and plan.name == "pnn"
    pnn = model_to_adapt(source, plan)
    assert isinstance(pnn, ProgressiveCTCModel)
    with pytest.raises(ConfigError, match="already progressive"):
        model_to_adapt(pnn, plan)
    result = adapt(pnn, pool, AdaptConfig(minutes=0.035, lr=0.5, max_steps=20, eval_every=2))
    losses = [loss for _, loss in result.history]
    assert min(losses) < losses[0]
    assert "lat_head_weight" in result.params
    assert all(torch.equal(before[n], p) for n, p in source.params.items())  # the source column is untouched

    scratch = make_algorithm("scratch", source, InnerLoop())
    assert not scratch.meta_trains
    assert model_to_adapt(source, scratch.adaptation().plan) is source  # its model is the seeded initialisation
    fresh = model_to_adapt(source, AdaptationPlan(fresh=True), seed=3)  # adapt's scratch=true
    assert not torch.equal(fresh.params["head_weight"], source.params["head_weight"])
    assert torch.equal(model_to_adapt(source, AdaptationPlan(fresh=True), seed=3).params["head_weight"],
                       fresh.params["head_weight"])  # seeded
    with pytest.raises(RuntimeError, match="no meta-training"):
        scratch.meta_gradient(None)
