"""Meta-learning algorithms on a tiny task-batched CTC model in float64: MAML against torch.func, the others
against updates computed by hand, one task at a time."""

import pytest
import torch

from metarecipe.meta import InnerLoop, MetaBatch, TaskSet, make_algorithm, task_losses
from metarecipe.models import BatchedCTCModel, ModelConfig

TINY = ModelConfig(vocab_size=6, num_mel_bins=12, conv_channels=2, d_model=6, gru_hidden=3, gru_layers=1)
TINY_TRANSFORMER = ModelConfig(vocab_size=6, num_mel_bins=12, conv_channels=2, d_model=8, encoder="transformer",
                               transformer_layers=1, attention_heads=2, feedforward_dim=10)
LR = 0.3


def task_set(gen, n, b=3, frames=30):
    return TaskSet(torch.randn(n, b, frames, 12, generator=gen, dtype=torch.float64),
                   torch.randint(22, frames + 1, (n, b), generator=gen),
                   torch.randint(1, 6, (n, b, 2), generator=gen), torch.randint(1, 3, (n, b), generator=gen))


def make_setup(config):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = BatchedCTCModel(config).double()
    return model, MetaBatch(task_set(gen, 2), task_set(gen, 2))


@pytest.fixture
def setup():
    return make_setup(TINY)


def one_task(tasks, i):
    return TaskSet(*(getattr(tasks, f)[i:i + 1] for f in ("feats", "lengths", "targets", "target_lengths")))


def single_loss(model, params, tasks, backend="torch"):
    """One task's loss; the torch CTC backend and the op-by-op recurrences are the reference path."""
    gru = "reference" if backend == "torch" else None
    return task_losses(model, {k: v.unsqueeze(0) for k, v in params.items()}, tasks, backend, gru)[0]


@pytest.mark.parametrize("config", [TINY, TINY_TRANSFORMER], ids=["gru", "transformer"])
def test_maml_meta_gradient_equals_torch_func(config):
    model, batch = make_setup(config)
    ours = make_algorithm("maml", model, InnerLoop(lr=LR, steps=1, backend="cpp"))
    _, grads = ours.meta_gradient(batch)
    base = {k: v.detach() for k, v in model.params.items()}
    expected = {k: torch.zeros_like(v) for k, v in base.items()}
    for i in range(2):
        support, query = one_task(batch.support, i), one_task(batch.query, i)

        def query_after_step(params, support=support, query=query):
            inner = torch.func.grad(lambda p: single_loss(model, p, support))(params)
            return single_loss(model, {k: params[k] - LR * inner[k] for k in params}, query)

        for k, g in torch.func.grad(query_after_step)(base).items():
            expected[k] += g / 2
    for (name, _), g in zip(model.params.items(), grads, strict=False):
        torch.testing.assert_close(g, expected[name], rtol=1e-8, atol=1e-10)


def hand_adapted(model, support, steps=1, lr=LR, names=None):
    params = {k: v.detach().clone().requires_grad_() for k, v in model.params.items()}
    for _ in range(steps):
        grads = torch.autograd.grad(single_loss(model, params, support, "cpp"), list(params.values()))
        params = {k: (v - lr * g if names is None or k in names else v).detach().requires_grad_()
                  for (k, v), g in zip(params.items(), grads, strict=True)}
    return params


def test_fomaml_is_the_query_gradient_at_the_adapted_parameters(setup):
    model, batch = setup
    _, grads = make_algorithm("fomaml", model, InnerLoop(lr=LR, backend="cpp")).meta_gradient(batch)
    expected = None
    for i in range(2):
        adapted = hand_adapted(model, one_task(batch.support, i))
        g = torch.autograd.grad(single_loss(model, adapted, one_task(batch.query, i), "cpp"), list(adapted.values()))
        expected = [e + x / 2 for e, x in zip(expected, g, strict=True)] if expected else [x / 2 for x in g]
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_reptile_moves_towards_the_mean_adapted_parameters(setup):
    model, batch = setup
    _, grads = make_algorithm("reptile", model, InnerLoop(lr=LR, steps=3, backend="cpp")).meta_gradient(batch)
    adapted = [hand_adapted(model, one_task(batch.support, i), steps=3) for i in range(2)]
    for (name, p), g in zip(model.params.items(), grads, strict=True):
        torch.testing.assert_close(g, p.detach() - (adapted[0][name] + adapted[1][name]) / 2, rtol=1e-10, atol=1e-12)


def test_metasgd_learning_rate_gradient_is_minus_support_times_query_gradient(setup):
    model, batch = setup
    algo = make_algorithm("metasgd", model, InnerLoop(lr=LR, backend="cpp"))
    _, grads = algo.meta_gradient(batch)
    maml_grads = make_algorithm("maml", model, InnerLoop(lr=LR, backend="cpp")).meta_gradient(batch)[1]
    names = list(model.params)
    for g, m in zip(grads[:len(names)], maml_grads, strict=True):  # alpha = lr everywhere: MAML's gradient
        torch.testing.assert_close(g, m, rtol=1e-10, atol=1e-12)
    for k, name in enumerate(names):
        expected = 0
        for i in range(2):
            params = {n: v.detach().requires_grad_() for n, v in model.params.items()}
            g_s = torch.autograd.grad(single_loss(model, params, one_task(batch.support, i), "cpp"), params[name])[0]
            adapted = hand_adapted(model, one_task(batch.support, i))
            g_q = torch.autograd.grad(single_loss(model, adapted, one_task(batch.query, i), "cpp"), adapted[name])[0]
            expected = expected - g_s * g_q / 2
        torch.testing.assert_close(grads[len(names) + k], expected, rtol=1e-9, atol=1e-12)


def test_anil_equals_metasgd_with_zero_rates_outside_the_head(setup):
    model, batch = setup
    _, anil = make_algorithm("anil", model, InnerLoop(lr=LR, backend="cpp")).meta_gradient(batch)
    metasgd = make_algorithm("metasgd", model, InnerLoop(lr=LR, backend="cpp"))
    with torch.no_grad():
        for name, alpha in metasgd.alphas.items():
            alpha.fill_(LR if name.startswith("head_") else 0.0)
    _, expected = metasgd.meta_gradient(batch)
    for g, e in zip(anil, expected[:len(anil)], strict=False):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_unknown_algorithm_is_named():
    with pytest.raises(ValueError, match="unknown meta-learning algorithm 'mamal'"):
        make_algorithm("mamal", BatchedCTCModel(TINY), InnerLoop())


def test_multi_step_loss_averages_the_query_loss_after_every_step(setup):
    model, batch = setup
    loss, grads = make_algorithm("maml", model, InnerLoop(lr=LR, steps=2, backend="cpp", multi_step_loss=True)
                                 ).meta_gradient(batch)
    algo = make_algorithm("maml", model, InnerLoop(lr=LR, steps=2, backend="cpp"))
    steps = algo.adapt_steps(batch.support, create_graph=True)
    expected = sum(task_losses(model, p, batch.query, "cpp").mean() for p in steps) / 2
    assert torch.isclose(loss, expected.detach())
    for g, e in zip(grads, torch.autograd.grad(expected, list(model.params.values())), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_multilingual_is_joint_training_on_support_and_query(setup):
    model, batch = setup
    loss, grads = make_algorithm("multilingual", model, InnerLoop(backend="cpp")).meta_gradient(batch)
    expected = 0
    for i in range(2):
        params = dict(model.params.items())
        expected = expected + (single_loss(model, params, one_task(batch.support, i), "cpp")
                               + single_loss(model, params, one_task(batch.query, i), "cpp")) / 4
    assert torch.isclose(loss, expected.detach())
    for g, e in zip(grads, torch.autograd.grad(expected, list(model.params.values())), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
