"""A second-order meta-gradient (MAML) through ctc_loss: exact on every backend."""

import pytest
import torch
from kernel_inputs import BACKENDS, assert_close_rel, ctc_problem, device_of, fresh_seed

from metarecipe.kernels import ctc_loss


def maml_meta_gradient(weight, support, query, backend, inner_lr=0.5):
    """d query_loss(W - lr * d support_loss(W) / dW) / dW for a linear CTC model x -> log_softmax(x W)."""

    def loss(w, task):
        features, targets, in_len, tgt_len = task
        log_probs = (features @ w).log_softmax(-1)
        return ctc_loss(log_probs, targets, in_len, tgt_len, reduction="mean", backend=backend)

    (inner_grad,) = torch.autograd.grad(loss(weight, support), weight, create_graph=True)
    adapted = weight - inner_lr * inner_grad
    (meta_grad,) = torch.autograd.grad(loss(adapted, query), weight)
    return meta_grad


def task(seed, device, num_features=6):
    scores, targets, in_len, tgt_len = ctc_problem(seed, batch=4, frames=20, vocab=5, max_labels=6, device=device)
    features = scores.detach()[..., :1].repeat(1, 1, num_features)
    features = features + torch.randn_like(features)
    return features, targets, in_len, tgt_len


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_second_order_meta_gradient_equals_torch_reference(backend):
    seed = fresh_seed()
    device = device_of(backend)
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(6, 5, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    support, query = task(seed + 1, device), task(seed + 2, device)
    ours = maml_meta_gradient(weight, support, query, backend)
    reference = maml_meta_gradient(weight, support, query, "torch")
    assert_close_rel(ours, reference, 1e-8, "meta-gradient", seed)
    # the second-order term is really there: the first-order approximation differs
    adapted = (weight - 0.5 * torch.autograd.grad(
        ctc_loss((support[0] @ weight).log_softmax(-1), *support[1:], backend=backend), weight)[0]).detach()
    adapted.requires_grad_()
    (first_order,) = torch.autograd.grad(ctc_loss((query[0] @ adapted).log_softmax(-1), *query[1:], backend=backend),
                                         adapted)
    assert (first_order - reference).abs().max() > 1e-6 * reference.abs().max()
