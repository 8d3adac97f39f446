"""metarecipe.kernels.ctc_loss: parity with torch, true gradients, exact double backward, edge cases, errors."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from kernel_inputs import (
    BACKENDS,
    CPU_BACKENDS,
    as_torch_gradient,
    assert_close_rel,
    ctc_problem,
    device_of,
    fresh_seed,
)

from metarecipe.kernels import available_backends, ctc_loss

RTOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def concatenated(targets, target_lengths):
    return torch.cat([targets[b, : int(n)] for b, n in enumerate(target_lengths)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
def test_loss_and_gradient_match_torch_behind_log_softmax(backend, dtype, reduction, layout):
    seed = fresh_seed()
    scores, targets, in_len, tgt_len = ctc_problem(seed, batch=6, frames=40, vocab=9, max_labels=12, dtype=dtype,
                                                   device=device_of(backend))
    if layout == "concatenated":
        targets = concatenated(targets, tgt_len)
    expected = F.ctc_loss(scores.log_softmax(-1), targets, in_len, tgt_len, reduction=reduction)
    (expected_grad,) = torch.autograd.grad(expected.sum(), scores)
    actual = ctc_loss(scores.log_softmax(-1), targets, in_len, tgt_len, reduction=reduction, backend=backend)
    (actual_grad,) = torch.autograd.grad(actual.sum(), scores)
    assert actual.dtype == dtype
    assert_close_rel(actual, expected, RTOL[dtype], "loss", seed)
    assert_close_rel(actual_grad, expected_grad, RTOL[dtype], "gradient", seed)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_input_matches_torch(backend):
    seed = fresh_seed()
    scores, targets, in_len, tgt_len = ctc_problem(seed, batch=1, device=device_of(backend))
    lp = scores[:, 0].log_softmax(-1)
    target = targets[0, : int(tgt_len[0])]
    expected = F.ctc_loss(lp, target, in_len[:1], tgt_len[:1], reduction="none")
    actual = ctc_loss(lp, target, int(in_len[0]), int(tgt_len[0]), reduction="none", backend=backend)
    assert actual.shape == expected.shape == ()
    assert_close_rel(actual, expected, 1e-10, "loss", seed)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradient_and_hessian_of_raw_scores_pass_gradcheck(backend):
    """No log_softmax in front: the gradient is the true derivative (torch's is not, pytorch issue 52241)."""
    seed = fresh_seed()
    scores, targets, in_len, tgt_len = ctc_problem(seed, batch=4, frames=9, vocab=5, max_labels=3)
    targets[0, :3] = torch.tensor([2, 2, 3])  # a repeated label
    tgt_len[0], in_len[0], tgt_len[1] = 3, 9, 0  # and an empty target
    scores = scores.detach().requires_grad_()

    def loss(x):
        return ctc_loss(x, targets, in_len, tgt_len, reduction="sum", backend=backend)

    assert torch.autograd.gradcheck(loss, (scores,)), f"seed {seed}"
    assert torch.autograd.gradgradcheck(loss, (scores,)), f"seed {seed}"


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_double_backward_matches_torch_reference(backend, reduction):
    seed = fresh_seed()
    device = device_of(backend)
    scores, targets, in_len, tgt_len = ctc_problem(seed, batch=5, frames=25, vocab=6, max_labels=7, device=device)
    direction = torch.randn(scores.shape, dtype=scores.dtype, generator=torch.Generator().manual_seed(seed))
    direction = direction.to(device)

    def hessian_vector_product(name):
        loss = ctc_loss(scores.log_softmax(-1), targets, in_len, tgt_len, reduction=reduction, backend=name)
        (grad,) = torch.autograd.grad(loss, scores, create_graph=True)
        (hvp,) = torch.autograd.grad((grad * direction).sum(), scores)
        return hvp

    assert_close_rel(hessian_vector_product(backend), hessian_vector_product("torch"), 1e-8, "H v", seed)


@pytest.mark.parametrize("backend", BACKENDS)
def test_infeasible_alignment_gives_inf_or_zero_with_zero_gradient(backend):
    device = device_of(backend)
    lp = torch.randn(4, 2, 5, dtype=torch.float64, device=device).log_softmax(-1).requires_grad_()
    targets = torch.tensor([[1, 1, 2], [1, 2, 3]], device=device)
    in_len, tgt_len = torch.tensor([4, 2]), torch.tensor([3, 3])  # 1 1 2 needs 4 frames: feasible; 1 2 3 in 2: not
    losses = ctc_loss(lp, targets, in_len, tgt_len, reduction="none", backend=backend)
    assert torch.isfinite(losses[0]) and torch.isinf(losses[1]) and losses[1] > 0
    zeroed = ctc_loss(lp, targets, in_len, tgt_len, reduction="sum", zero_infinity=True, backend=backend)
    expected = F.ctc_loss(lp, targets, in_len, tgt_len, reduction="sum", zero_infinity=True)
    (grad,) = torch.autograd.grad(zeroed, lp)
    (expected_grad,) = torch.autograd.grad(expected, lp)
    assert_close_rel(zeroed, expected, 1e-10, "loss", 0)
    assert_close_rel(as_torch_gradient(grad, lp), expected_grad, 1e-10, "gradient", 0)
    assert torch.all(grad[:, 1] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_cases_match_torch(backend):
    """Empty targets, repeated labels, input length exactly the minimum, a single frame."""
    device = device_of(backend)
    lp = torch.randn(6, 5, 4, dtype=torch.float64, device=device).log_softmax(-1).requires_grad_()
    targets = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 0], [1, 2, 1, 2], [3, 3, 0, 0], [2, 0, 0, 0]], device=device)
    targets = targets.clamp(min=1)
    in_len = torch.tensor([6, 5, 4, 3, 1])  # exactly the minimum for rows 1, 2, 3 and 4
    tgt_len = torch.tensor([0, 3, 4, 2, 1])
    expected = F.ctc_loss(lp, targets, in_len, tgt_len, reduction="none")
    actual = ctc_loss(lp, targets, in_len, tgt_len, reduction="none", backend=backend)
    assert_close_rel(actual, expected, 1e-10, "loss", 0)
    (grad,) = torch.autograd.grad(actual.sum(), lp)
    (expected_grad,) = torch.autograd.grad(expected.sum(), lp)
    assert_close_rel(as_torch_gradient(grad, lp), expected_grad, 1e-10, "gradient", 0)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_long_utterances_stay_exact(backend):
    """T = 1500, U = 450: probability mass of alpha and beta spans far more than double's range."""
    seed = fresh_seed()
    gen = torch.Generator().manual_seed(seed)
    lp = torch.randn(1500, 2, 32, generator=gen, dtype=torch.float64).log_softmax(-1)
    lp = lp.to(device_of(backend)).requires_grad_()
    targets = torch.randint(1, 32, (2, 450), generator=gen).to(lp.device)
    lengths = (torch.tensor([1500, 1200]), torch.tensor([450, 400]))
    expected = F.ctc_loss(lp, targets, *lengths, reduction="none")
    actual = ctc_loss(lp, targets, *lengths, reduction="none", backend=backend)
    assert_close_rel(actual, expected, 1e-10, "loss", seed)
    (grad,) = torch.autograd.grad(actual.sum(), lp)
    (expected_grad,) = torch.autograd.grad(expected.sum(), lp)
    assert_close_rel(as_torch_gradient(grad, lp), expected_grad, 1e-9, "gradient", seed)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_masked_and_unnormalised_scores_match_reference(backend):
    """Scores far from log-probabilities (x50) and masks of -1e9 (impossible tokens)."""
    seed = fresh_seed()
    scores, targets, in_len, tgt_len = ctc_problem(seed, batch=4, frames=20, vocab=6, max_labels=5,
                                                   device=device_of(backend))
    raw = scores.detach() * 50
    raw[:3, :, 1] = -1e9  # label 1 is impossible in the first frames: a sample may have no alignment left
    # The reference sees the mask as what it means, probability 0 (torch would score -1e9 as a finite path).
    inputs = {backend: raw.clone().requires_grad_(),
              "torch": raw.masked_fill(raw <= -1e6, float("-inf")).requires_grad_()}
    results = {}
    for name, scores_in in inputs.items():
        loss = ctc_loss(scores_in, targets, in_len, tgt_len, reduction="none", backend=name)
        (grad,) = torch.autograd.grad(loss[torch.isfinite(loss)].sum(), scores_in)
        results[name] = (loss, grad)
    assert_close_rel(results[backend][0], results["torch"][0], 1e-10, "loss", seed)
    assert_close_rel(results[backend][1], results["torch"][1], 1e-10, "gradient", seed)


def _good_args():
    lp = torch.randn(10, 2, 5).log_softmax(-1)
    return {"log_probs": lp, "targets": torch.tensor([[1, 2], [3, 0]]), "input_lengths": [10, 8],
            "target_lengths": [2, 1]}


@pytest.mark.parametrize("change, message", [
    ({"log_probs": torch.randn(10, 2, 5).half()}, "log_probs must be a float32 or float64"),
    ({"log_probs": torch.randn(10, 2, 5, 1)}, "log_probs must be (T, B, V)"),
    ({"log_probs": torch.randn(0, 2, 5), "input_lengths": [0, 0]}, "log_probs must have at least one frame"),
    ({"input_lengths": [10, -1]}, "input_lengths[1] = -1 is negative"),
    ({"input_lengths": [11, 8]}, "input_lengths[0] = 11 exceeds the 10 frames"),
    ({"input_lengths": [10]}, "input_lengths must have shape (2,)"),
    ({"input_lengths": [10.0, 8.0]}, "input_lengths must hold integers"),
    ({"target_lengths": [3, 1]}, "target_lengths[0] = 3 exceeds the 2 columns"),
    ({"target_lengths": [2, -1]}, "target_lengths[1] = -1 is negative"),
    ({"targets": torch.tensor([[1, 5], [3, 0]])}, "targets[0][1] = 5 is not a label"),
    ({"targets": torch.tensor([[1, 0], [3, 0]])}, "targets[0][1] = 0 is not a label"),
    ({"targets": torch.tensor([[1.0, 2.0], [3.0, 0.0]])}, "targets must hold integer labels"),
    ({"targets": torch.tensor([1, 2, 3, 4])}, "concatenated targets hold 4 labels but target_lengths sum to 3"),
    ({"targets": torch.tensor([[1, 2]])}, "targets has 1 rows but log_probs a batch of 2"),
    ({"blank": 5}, "blank must be an int in [0, 5)"),
    ({"reduction": "avg"}, "reduction must be one of"),
    ({"backend": "tpu"}, "backend for ctc_loss must be one of"),
])
def test_bad_arguments_raise_value_error_naming_them(change, message):
    args = {**_good_args(), **change}
    with pytest.raises(ValueError) as err:
        ctc_loss(**args)
    assert message in str(err.value)


def test_available_backends_lists_cpu_fallbacks():
    backends = available_backends()
    assert backends[-2:] == ["numba", "torch"]
    if os.environ.get("METARECIPE_NO_EXT") != "1" and os.environ.get("METARECIPE_REQUIRE_EXT") == "1":
        assert "cpp" in backends


def test_without_extension_the_numba_backend_is_chosen_with_one_warning():
    code = (
        "import warnings, torch\n"
        "from metarecipe.kernels import available_backends, ctc_loss\n"
        "print(available_backends())\n"
        "lp = torch.randn(8, 2, 5).log_softmax(-1)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    for _ in range(3):\n"
        "        ctc_loss(lp, torch.tensor([[1, 2], [3, 4]]), [8, 8], [2, 2])\n"
        "print(len(caught), caught[0].message)\n"
    )
    env = {**os.environ, "METARECIPE_NO_EXT": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0] == "['numba', 'torch']"
    assert lines[1].startswith("1 metarecipe: ctc_loss falls back to the numba backend: METARECIPE_NO_EXT=1")
