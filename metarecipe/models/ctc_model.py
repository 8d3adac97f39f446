"""The CTC acoustic model, task-batched: conv 4x subsampling -> encoder (BiGRU layers with LayerNorm, or
pre-LayerNorm Transformer layers) -> linear head.

`functional_forward(params, feats, lengths)` runs N tasks at once from parameters stacked along a leading task
dimension (MAML's per-task fast weights); `forward(feats, lengths)` is the ordinary single-task module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from metarecipe.models import batched_ops as ops
from metarecipe.models import encoders


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 0  # 0 in a config file: the size of the experiment's token table
    num_mel_bins: int = 80
    conv_channels: int = 32
    d_model: int = 256
    encoder: str = "gru"  # or "transformer"
    gru_hidden: int = 256
    gru_layers: int = 2
    transformer_layers: int = 4
    attention_heads: int = 4
    feedforward_dim: int = 1024

    def __post_init__(self):
        if self.encoder not in ("gru", "transformer"):
            raise ValueError(f"encoder must be 'gru' or 'transformer', got {self.encoder!r}")
        if self.encoder == "transformer" and self.d_model % (2 * self.attention_heads):
            raise ValueError(f"d_model={self.d_model} must be a multiple of 2 x attention_heads "
                             f"({self.attention_heads})")


def parameter_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter of one task."""
    freq = cfg.num_mel_bins
    for _ in range(2):
        freq = (freq - 3) // 2 + 1
    shapes = {
        "conv1_weight": (cfg.conv_channels, 1, 3, 3), "conv1_bias": (cfg.conv_channels,),
        "conv2_weight": (cfg.conv_channels, cfg.conv_channels, 3, 3), "conv2_bias": (cfg.conv_channels,),
        "proj_weight": (cfg.conv_channels * freq, cfg.d_model), "proj_bias": (cfg.d_model,),
    }
    shapes.update(encoders.gru_shapes(cfg) if cfg.encoder == "gru" else encoders.transformer_shapes(cfg))
    shapes.update({"head_weight": (encoders.encoder_dim(cfg), cfg.vocab_size), "head_bias": (cfg.vocab_size,)})
    return shapes


def initial_value(name: str, shapes: dict[str, tuple[int, ...]], cfg: ModelConfig) -> torch.Tensor:
    """PyTorch's default initialisation: uniform in +-1/sqrt(fan_in) (GRU: 1/sqrt(hidden)); LayerNorm 1 and 0."""
    shape = shapes[name]
    if "norm" in name:
        return torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
    if name.startswith("gru"):
        fan_in = cfg.gru_hidden
    else:
        weight = shapes[name.replace("_bias", "_weight")]
        fan_in = weight[1] * 9 if name.startswith("conv") else weight[0]
    bound = 1 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound)


def ctc_forward(config: ModelConfig, params: dict[str, torch.Tensor], feats: torch.Tensor, lengths: torch.Tensor,
                gru_backend: str | None = None, laterals=None, taps=None):
    """feats (N, B, T, F), lengths (N, B) -> log-probabilities (N, B, T', V) and lengths (N, B), T' ~ T/4.
    gru_backend: of the recurrence kernel; "reference" runs it op by op (for torch.func transforms).
    taps (a list) collects the input of every encoder layer and of the head; laterals (one tensor per encoder
    layer, then one (N, B, T', V) for the logits) are added to them: progressive networks' hooks."""
    x = feats.unsqueeze(2)  # (N, B, 1, T, F)
    x = torch.relu(ops.conv2d_stride2(x, params["conv1_weight"], params["conv1_bias"]))
    x = torch.relu(ops.conv2d_stride2(x, params["conv2_weight"], params["conv2_bias"]))
    n, b, c, t, f = x.shape
    x = ops.linear(x.permute(0, 1, 3, 2, 4).reshape(n, b, t, c * f), params["proj_weight"], params["proj_bias"])
    out_lengths = ops.subsampled_lengths(lengths)
    if config.encoder == "gru":
        x = encoders.gru_encoder(params, x, out_lengths, config, gru_backend, laterals, taps)
    else:
        x = encoders.transformer_encoder(params, x, out_lengths, config, laterals, taps)
    if taps is not None:
        taps.append(x)
    logits = ops.linear(x, params["head_weight"], params["head_bias"])
    if laterals is not None:
        logits = logits + laterals[-1]
    return logits.log_softmax(-1), out_lengths


def stacked(params, num_tasks: int) -> dict[str, torch.Tensor]:
    """Shared parameters expanded to (N, ...) per task, still attached to the originals."""
    return {name: p.unsqueeze(0).expand(num_tasks, *p.shape) for name, p in params.items()}


class BatchedCTCModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        shapes = parameter_shapes(config)
        self.params = nn.ParameterDict({name: nn.Parameter(initial_value(name, shapes, config)) for name in shapes})

    def stacked(self, num_tasks: int) -> dict[str, torch.Tensor]:
        return stacked(self.params, num_tasks)

    def functional_forward(self, params: dict[str, torch.Tensor], feats: torch.Tensor, lengths: torch.Tensor,
                           gru_backend: str | None = None, laterals=None, taps=None):
        """See ctc_forward."""
        return ctc_forward(self.config, params, feats, lengths, gru_backend, laterals, taps)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        """One task: feats (B, T, F), lengths (B,) -> log-probabilities (B, T', V) and lengths (B,)."""
        log_probs, out_lengths = self.functional_forward(self.stacked(1), feats.unsqueeze(0), lengths.unsqueeze(0))
        return log_probs[0], out_lengths[0]
