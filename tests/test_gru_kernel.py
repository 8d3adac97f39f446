"""The task-batched GRU kernel: every backend against the op-by-op torch reference, to the second order."""

import os

import pytest
import torch

from metarecipe.kernels import available_backends
from metarecipe.kernels import gru_reference as reference
from metarecipe.kernels.gru import Int8Recurrent, cpu_has_vnni, gru_inference, gru_inference_int8, gru_recurrence

BACKENDS = [b for b in ("cpp", "torch") if b in available_backends()]
SEED = int(os.environ.get("METARECIPE_TEST_SEED", torch.seed() % 2**31))


def random_inputs(seed, dtype, steps=7, tasks=3, batch=4, hidden=5):
    """Fresh gates, weights and variable lengths (one sequence of full length, one of length 1)."""
    gen = torch.Generator().manual_seed(seed)
    gates = torch.randn(steps, tasks, batch, 3 * hidden, generator=gen, dtype=dtype)
    w = 0.6 * torch.randn(tasks, hidden, 3 * hidden, generator=gen, dtype=dtype)
    b = torch.randn(tasks, 3 * hidden, generator=gen, dtype=dtype)
    lengths = torch.randint(1, steps + 1, (tasks, batch), generator=gen)
    lengths[0, 0], lengths[-1, -1] = steps, 1
    valid = (torch.arange(steps)[:, None, None] < lengths.unsqueeze(0)).to(dtype)
    return [t.requires_grad_() for t in (gates, w, b)], valid


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_and_gradgradcheck_float64(backend, reverse):
    # small: gradgradcheck's cost grows with the square of the inputs (the reference test below is larger)
    inputs, valid = random_inputs(SEED, torch.float64, steps=5, tasks=2, batch=3, hidden=4)

    def fn(gates, w, b):
        return gru_recurrence(gates, w, b, valid, reverse, backend=backend)

    expected = reference.gru_recurrence(*inputs, valid, reverse)
    torch.testing.assert_close(fn(*inputs), expected, rtol=1e-12, atol=1e-12, msg=f"seed {SEED}")
    assert torch.autograd.gradcheck(fn, inputs), f"seed {SEED}"
    assert torch.autograd.gradgradcheck(fn, inputs), f"seed {SEED}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_first_and_second_derivatives_equal_the_reference(backend, dtype, tol):
    """Gradient and a Hessian-vector product of a random functional, against autograd through the reference."""
    inputs, valid = random_inputs(SEED + 1, dtype, steps=12, tasks=2, batch=3, hidden=8)
    gen = torch.Generator().manual_seed(SEED + 2)
    direction = torch.randn(12, 2, 3, 8, generator=gen, dtype=dtype)
    probes = [torch.randn(t.shape, generator=gen, dtype=dtype) for t in inputs]
    results = []
    for run in (lambda *a: reference.gru_recurrence(*a, valid, True),
                lambda *a: gru_recurrence(*a, valid, True, backend=backend)):
        out = run(*inputs)
        grads = torch.autograd.grad((torch.tanh(out) * direction).sum(), inputs, create_graph=True)
        second = torch.autograd.grad(sum((g * p).sum() for g, p in zip(grads, probes, strict=True)), inputs)
        results.append((out, grads, second))
    for got, want in zip(results[1], results[0], strict=True):
        for g, w in zip(got if isinstance(got, tuple) else [got], want if isinstance(want, tuple) else [want],
                        strict=True):
            torch.testing.assert_close(g, w, rtol=tol, atol=tol, msg=f"seed {SEED}")


def test_backend_choice_is_checked():
    inputs, valid = random_inputs(0, torch.float64)
    with pytest.raises(ValueError, match="backend for gru must be one of"):
        gru_recurrence(*inputs, valid, backend="numba")
    with pytest.raises(ValueError, match="valid must have shape"):
        gru_recurrence(*inputs, valid[:, :1])


INFERENCE_BACKENDS = [b for b in ("cpp", "torch") if b in available_backends()]


@pytest.mark.parametrize("backend", INFERENCE_BACKENDS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("hidden", [5, 37, 128])
def test_inference_recurrence_equals_the_float64_reference(backend, reverse, hidden):
    """gru_inference in float32 (widths that fill no, some and all vector lanes) against the reference in float64,
    on fresh inputs with variable lengths and gate pre-activations far into the saturated range."""
    gen = torch.Generator().manual_seed(SEED + hidden)
    steps, batch = 40, 6
    gates = 4 * torch.randn(steps, batch, 3 * hidden, generator=gen)
    w = torch.randn(hidden, 3 * hidden, generator=gen) / hidden ** 0.5
    b = torch.randn(3 * hidden, generator=gen)
    lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
    lengths[0], lengths[-1] = steps, 1
    valid = (torch.arange(steps)[:, None] < lengths[None, :]).float()
    got = gru_inference(gates, w, b, valid, reverse, backend=backend)
    want = reference.gru_recurrence(gates.double().unsqueeze(1), w.double()[None], b.double()[None],
                                    valid.double().unsqueeze(1), reverse)[:, 0]
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-5, msg=f"seed {SEED}")
    assert got.dtype == torch.float32 and not got.requires_grad


def test_inference_recurrence_checks_its_inputs():
    gates, w, b = torch.randn(3, 2, 12), torch.randn(4, 12), torch.randn(12)
    if "cpp" in available_backends():
        with pytest.raises(RuntimeError, match="shapes disagree"):
            gru_inference(gates, w[:3], b, torch.ones(3, 2), backend="cpp")
    with pytest.raises(ValueError, match="backend for gru_inference must be one of"):
        gru_inference(gates, w, b, torch.ones(3, 2), backend="numba")


def int8_reference(gates, w_int8, scale, b, valid, reverse):
    """The int8 recurrence in float64: each row of the state quantized to round(h * 127 / max|h|)."""
    steps, batch, three_h = gates.shape
    hidden = three_h // 3
    w = w_int8.double() * scale.double()
    h = torch.zeros(batch, hidden, dtype=torch.float64)
    out = torch.zeros(steps, batch, hidden, dtype=torch.float64)
    for s in (reversed(range(steps)) if reverse else range(steps)):
        top = h.abs().amax(1, keepdim=True)
        q = torch.round(h * torch.where(top > 0, 127 / top, 0)) * (top / 127)
        g = q @ w + b.double()
        x, m = gates[s].double(), valid[s].double().unsqueeze(1)
        r, z = torch.sigmoid(x[:, :hidden] + g[:, :hidden]), torch.sigmoid(x[:, hidden:-hidden] + g[:, hidden:-hidden])
        cand = torch.tanh(x[:, -hidden:] + r * g[:, -hidden:])
        out[s] = (cand + z * (h - cand)) * m
        h = h + m * (out[s] - h)
    return out


def int8_inputs(seed, hidden, steps=40, batch=11):
    gen = torch.Generator().manual_seed(seed)
    gates = 3 * torch.randn(steps, batch, 3 * hidden, generator=gen)
    w = torch.randn(hidden, 3 * hidden, generator=gen) / hidden ** 0.5
    scale = w.abs().amax(0) / 127
    w_int8 = torch.round(w / scale).to(torch.int8)
    b = torch.randn(3 * hidden, generator=gen)
    lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
    lengths[0], lengths[-1] = steps, 1
    valid = (torch.arange(steps)[:, None] < lengths[None, :]).float()
    return gates, w_int8, scale, b, valid


INT8_VARIANTS = [("torch", None)] + ([("cpp", False), ("cpp", None)] if "cpp" in INFERENCE_BACKENDS else [])


@pytest.mark.parametrize("backend,vnni", INT8_VARIANTS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("hidden", [5, 37, 115, 128])
def test_int8_recurrence_equals_the_float64_reference(backend, vnni, reverse, hidden):
    """gru_inference_int8 (plain loop, AVX-512 VNNI where the CPU has it, torch) against the same quantized
    arithmetic in float64, on fresh inputs with variable lengths; widths that fill no, some and all of the
    kernel's 4-byte groups and 16-column blocks. Where float32 and float64 round a state entry differently,
    its int8 value differs by one and the outputs by up to 5e-3 from then on (measured over 150 seeds), hence
    atol 2e-2 on any entry and 2e-4 on the mean; a rounding or offset error moves every entry."""
    gates, w_int8, scale, b, valid = int8_inputs(SEED + hidden, hidden)
    got = gru_inference_int8(gates, Int8Recurrent(w_int8, scale), b, valid, reverse, backend=backend, vnni=vnni)
    want = int8_reference(gates, w_int8, scale, b, valid, reverse)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-2, msg=f"seed {SEED}")
    assert (got.double() - want).abs().mean() < 2e-4, f"seed {SEED}"
    assert torch.equal(got[valid == 0], torch.zeros_like(got[valid == 0]))
    # and the state quantization costs little against the float recurrence with the same weights
    exact = reference.gru_recurrence(gates.double().unsqueeze(1), (w_int8.double() * scale.double())[None],
                                     b.double()[None], valid.double().unsqueeze(1), reverse)[:, 0]
    assert (got.double() - exact).abs().max() < 0.05, f"seed {SEED}"


@pytest.mark.skipif(not cpu_has_vnni(), reason="this CPU (or build) has no AVX-512 VNNI")
def test_int8_recurrence_vnni_equals_the_plain_loop_exactly():
    gates, w_int8, scale, b, valid = int8_inputs(SEED, 83, steps=25, batch=19)
    weights = Int8Recurrent(w_int8, scale)
    for reverse in (False, True):
        plain = gru_inference_int8(gates, weights, b, valid, reverse, backend="cpp", vnni=False)
        assert torch.equal(gru_inference_int8(gates, weights, b, valid, reverse, backend="cpp", vnni=True), plain)


def test_int8_recurrence_checks_its_inputs():
    with pytest.raises(ValueError, match=r"int8 \(H, 3H\)"):
        Int8Recurrent(torch.zeros(4, 12), torch.ones(12))
    with pytest.raises(ValueError, match=r"int8 \(H, 3H\)"):
        Int8Recurrent(torch.zeros(4, 12, dtype=torch.int8), torch.ones(11))
    if "cpp" in INFERENCE_BACKENDS:
        weights = Int8Recurrent(torch.zeros(4, 12, dtype=torch.int8), torch.ones(12))
        with pytest.raises(RuntimeError, match="shapes disagree"):
            gru_inference_int8(torch.randn(3, 2, 15), weights, torch.zeros(12), torch.ones(3, 2), backend="cpp")
