"""The two encoders of the CTC model, task-batched: parameter shapes and functional forwards.

Both map (N, B, T, d_model) frames with lengths (N, B) to (N, B, T, encoder_dim(cfg)) and are differentiable
twice (MAML). Parameter names carry the layer: gru{l}_{fw,bw}_*, norm{l}_* ; tf{l}_* , tf_norm_*.

Progressive networks hook in at every layer's input: `taps` (a list) collects each layer's input,
`laterals` (one tensor per layer, or None) is added to it first (the lateral connections of a new column).
"""

from __future__ import annotations

import math

import torch

from metarecipe.models import batched_ops as ops


def encoder_dim(cfg) -> int:
    return 2 * cfg.gru_hidden if cfg.encoder == "gru" else cfg.d_model


def gru_shapes(cfg) -> dict[str, tuple[int, ...]]:
    shapes, inputs, h = {}, cfg.d_model, cfg.gru_hidden
    for layer in range(cfg.gru_layers):
        for direction in ("fw", "bw"):
            prefix = f"gru{layer}_{direction}"
            shapes.update({f"{prefix}_w_ih": (inputs, 3 * h), f"{prefix}_w_hh": (h, 3 * h),
                           f"{prefix}_b_ih": (3 * h,), f"{prefix}_b_hh": (3 * h,)})
        shapes.update({f"norm{layer}_weight": (2 * h,), f"norm{layer}_bias": (2 * h,)})
        inputs = 2 * h
    return shapes


def layer_input_dims(cfg) -> list[int]:
    """Width of each encoder layer's input."""
    if cfg.encoder == "transformer":
        return [cfg.d_model] * cfg.transformer_layers
    return [cfg.d_model] + [2 * cfg.gru_hidden] * (cfg.gru_layers - 1)


def _hook(x, layer: int, laterals, taps):
    if laterals is not None:
        x = x + laterals[layer]
    if taps is not None:
        taps.append(x)
    return x


def gru_encoder(params, x, lengths, cfg, backend: str | None = None, laterals=None, taps=None) -> torch.Tensor:
    """BiGRU layers, each followed by LayerNorm."""
    for layer in range(cfg.gru_layers):
        x = _hook(x, layer, laterals, taps)
        directions = []
        for direction in ("fw", "bw"):
            p = f"gru{layer}_{direction}"
            directions.append(ops.gru_direction(x, lengths, params[f"{p}_w_ih"], params[f"{p}_w_hh"],
                                                params[f"{p}_b_ih"], params[f"{p}_b_hh"], direction == "bw", backend))
        x = ops.layer_norm(torch.cat(directions, dim=-1), params[f"norm{layer}_weight"], params[f"norm{layer}_bias"])
    return x


def transformer_shapes(cfg) -> dict[str, tuple[int, ...]]:
    d, ff = cfg.d_model, cfg.feedforward_dim
    shapes = {}
    for layer in range(cfg.transformer_layers):
        p = f"tf{layer}"
        shapes.update({f"{p}_norm1_weight": (d,), f"{p}_norm1_bias": (d,),
                       f"{p}_qkv_weight": (d, 3 * d), f"{p}_qkv_bias": (3 * d,),
                       f"{p}_out_weight": (d, d), f"{p}_out_bias": (d,),
                       f"{p}_norm2_weight": (d,), f"{p}_norm2_bias": (d,),
                       f"{p}_ff1_weight": (d, ff), f"{p}_ff1_bias": (ff,),
                       f"{p}_ff2_weight": (ff, d), f"{p}_ff2_bias": (d,)})
    shapes.update({"tf_norm_weight": (d,), "tf_norm_bias": (d,)})
    return shapes


def sinusoidal_positions(num_frames: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """(T, D) sine/cosine position encodings (Vaswani et al. 2017)."""
    position = torch.arange(num_frames, device=like.device, dtype=like.dtype).unsqueeze(1)
    rate = torch.exp(torch.arange(0, dim, 2, device=like.device, dtype=like.dtype) * (-math.log(10000.0) / dim))
    table = like.new_zeros(num_frames, dim)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return table


def self_attention(x, params, prefix: str, heads: int, key_mask: torch.Tensor) -> torch.Tensor:
    """Multi-head self-attention, explicit (twice differentiable). x (N, B, T, D), key_mask (N, B, T) True on
    frames to attend to -> (N, B, T, D)."""
    n, b, t, d = x.shape
    q, k, v = ops.linear(x, params[f"{prefix}_qkv_weight"], params[f"{prefix}_qkv_bias"]).chunk(3, dim=-1)
    q, k, v = (y.reshape(n, b, t, heads, d // heads).transpose(2, 3) for y in (q, k, v))  # (N, B, heads, T, dh)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    scores = scores.masked_fill(~key_mask[:, :, None, None, :], torch.finfo(x.dtype).min)
    context = (scores.softmax(dim=-1) @ v).transpose(2, 3).reshape(n, b, t, d)
    return ops.linear(context, params[f"{prefix}_out_weight"], params[f"{prefix}_out_bias"])


def transformer_encoder(params, x, lengths, cfg, laterals=None, taps=None) -> torch.Tensor:
    """Pre-LayerNorm Transformer layers (self-attention over valid frames, ReLU feed-forward), a final LayerNorm."""
    t = x.shape[2]
    x = x + sinusoidal_positions(t, x.shape[-1], x)
    key_mask = torch.arange(t, device=x.device) < lengths.unsqueeze(-1)  # (N, B, T)
    for layer in range(cfg.transformer_layers):
        p = f"tf{layer}"
        x = _hook(x, layer, laterals, taps)
        x = x + self_attention(ops.layer_norm(x, params[f"{p}_norm1_weight"], params[f"{p}_norm1_bias"]), params,
                               p, cfg.attention_heads, key_mask)
        hidden = torch.relu(ops.linear(ops.layer_norm(x, params[f"{p}_norm2_weight"], params[f"{p}_norm2_bias"]),
                                       params[f"{p}_ff1_weight"], params[f"{p}_ff1_bias"]))
        x = x + ops.linear(hidden, params[f"{p}_ff2_weight"], params[f"{p}_ff2_bias"])
    return ops.layer_norm(x, params["tf_norm_weight"], params["tf_norm_bias"])
