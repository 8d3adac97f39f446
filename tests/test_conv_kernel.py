"""The first convolution for inference (compact models): every backend against torch's conv2d in float64."""

import os

import pytest
import torch
import torch.nn.functional as F

from metarecipe.kernels import available_backends
from metarecipe.kernels.conv import conv1_relu

BACKENDS = [b for b in ("cpp", "torch") if b in available_backends()]
SEED = int(os.environ.get("METARECIPE_TEST_SEED", torch.seed() % 2**31))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels", [1, 12, 16, 17])
@pytest.mark.parametrize("frames,bins", [(3, 3), (4, 80), (241, 80), (96, 81), (57, 40)])
def test_conv1_relu_equals_the_float64_reference(backend, channels, frames, bins):
    """Fresh inputs of odd and even lengths and widths (the smallest a 3 x 3 window fits), in float32."""
    gen = torch.Generator().manual_seed(SEED + 31 * frames + bins)
    batch = 3
    feats = torch.randn(batch, frames, bins, generator=gen)
    feats[1, frames // 2:] = 0  # a padded utterance
    weight = torch.randn(channels, 1, 3, 3, generator=gen)
    bias = torch.randn(channels, generator=gen)
    got = conv1_relu(feats, weight, bias, backend=backend)
    want = torch.relu(F.conv2d(feats.double().unsqueeze(1), weight.double(), bias.double(), stride=2))
    assert got.shape == (batch, channels, (frames - 3) // 2 + 1, (bins - 3) // 2 + 1)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5, msg=f"seed {SEED}")


@pytest.mark.skipif("cpp" not in BACKENDS, reason="metarecipe._C is not built")
def test_conv1_relu_short_input_and_bad_shapes():
    weight, bias = torch.randn(4, 1, 3, 3), torch.randn(4)
    assert conv1_relu(torch.randn(2, 2, 80), weight, bias, backend="cpp").shape == (2, 4, 0, 39)
    with pytest.raises(RuntimeError, match=r"expected x \(B, T, F\), w \(C, 1, 3, 3\)"):
        conv1_relu(torch.randn(2, 9, 80), torch.randn(4, 2, 3, 3), bias, backend="cpp")
