"""Task-batched CTC model: the GRU equals torch's, and N tasks at once equal a loop of single-task forwards."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from metarecipe.kernels import ctc_loss
from metarecipe.models import BatchedCTCModel, ModelConfig
from metarecipe.models import batched_ops as ops

SMALL = ModelConfig(vocab_size=12, num_mel_bins=20, conv_channels=4, d_model=16, gru_hidden=8, gru_layers=2)
SMALL_TRANSFORMER = ModelConfig(vocab_size=12, num_mel_bins=20, conv_channels=4, d_model=16, encoder="transformer",
                                transformer_layers=2, attention_heads=2, feedforward_dim=24)


def test_gru_direction_matches_torch_bidirectional_gru_with_packing():
    torch.manual_seed(0)
    gru = torch.nn.GRU(5, 7, batch_first=True, bidirectional=True).double()
    x = torch.randn(3, 9, 5, dtype=torch.float64)
    lengths = torch.tensor([9, 4, 6])
    expected, _ = pad_packed_sequence(gru(pack_padded_sequence(x, lengths, batch_first=True,
                                                              enforce_sorted=False))[0], batch_first=True)
    outs = []
    for suffix, reverse in (("", False), ("_reverse", True)):
        w_ih, w_hh = getattr(gru, f"weight_ih_l0{suffix}"), getattr(gru, f"weight_hh_l0{suffix}")
        b_ih, b_hh = getattr(gru, f"bias_ih_l0{suffix}"), getattr(gru, f"bias_hh_l0{suffix}")
        outs.append(ops.gru_direction(x[None], lengths[None], w_ih.T[None], w_hh.T[None], b_ih[None], b_hh[None],
                                      reverse)[0])
    torch.testing.assert_close(torch.cat(outs, -1), expected, rtol=1e-12, atol=1e-12)


def perturbed_tasks(model, n, seed):
    gen = torch.Generator().manual_seed(seed)
    return {k: v.detach() + 0.05 * torch.randn(n, *v.shape, generator=gen) for k, v in model.params.items()}


@pytest.mark.parametrize("config", [SMALL, SMALL_TRANSFORMER], ids=["gru", "transformer"])
@pytest.mark.parametrize("num_tasks", [1, 3, 8])
def test_batched_forward_and_backward_equal_a_loop_over_tasks(num_tasks, config):
    torch.manual_seed(num_tasks)
    model = BatchedCTCModel(config)
    params = {k: v.requires_grad_() for k, v in perturbed_tasks(model, num_tasks, 1).items()}
    feats = torch.randn(num_tasks, 4, 40, 20)
    lengths = torch.randint(20, 41, (num_tasks, 4))
    log_probs, out_lengths = model.functional_forward(params, feats, lengths)
    assert log_probs.shape == (num_tasks, 4, 9, 12)
    weights = torch.randn_like(log_probs)
    (log_probs * weights).sum().backward()
    for task in range(num_tasks):
        single = {k: v[task:task + 1].detach().requires_grad_() for k, v in params.items()}
        lp, ln = model.functional_forward(single, feats[task:task + 1], lengths[task:task + 1])
        torch.testing.assert_close(lp[0], log_probs[task], rtol=1e-5, atol=1e-5)
        assert torch.equal(ln[0], out_lengths[task])
        (lp * weights[task:task + 1]).sum().backward()
        for name, p in single.items():
            torch.testing.assert_close(p.grad[0], params[name].grad[task], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", [SMALL, SMALL_TRANSFORMER], ids=["gru", "transformer"])
def test_module_forward_is_twice_differentiable_through_ctc(config):
    torch.manual_seed(0)
    model = BatchedCTCModel(config).double()
    feats, lengths = torch.randn(3, 40, 20, dtype=torch.float64), torch.tensor([40, 33, 28])
    targets, target_lengths = torch.randint(1, 12, (3, 3)), torch.tensor([3, 2, 3])
    log_probs, out_lengths = model(feats, lengths)
    loss = ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths)
    grads = torch.autograd.grad(loss, list(model.params.values()), create_graph=True)
    second = torch.autograd.grad(sum((g**2).sum() for g in grads), list(model.params.values()))
    assert all(torch.isfinite(g).all() for g in second) and any(g.abs().sum() > 0 for g in second)


def test_transformer_padding_does_not_leak_into_valid_frames():
    """Frames past an utterance's length change nothing within it (attention masks them as keys)."""
    torch.manual_seed(0)
    model = BatchedCTCModel(SMALL_TRANSFORMER).double()
    feats = torch.randn(2, 60, 20, dtype=torch.float64)
    lengths = torch.tensor([60, 36])
    noisy = feats.clone()
    noisy[1, 36:] = 100 * torch.randn(24, 20, dtype=torch.float64)
    (a, la), (b, _) = model(feats, lengths), model(noisy, lengths)
    valid = int(la[1])
    torch.testing.assert_close(a[1, :valid], b[1, :valid], rtol=1e-12, atol=1e-12)


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="encoder must be"):
        ModelConfig(vocab_size=5, encoder="lstm")
