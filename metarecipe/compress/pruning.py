"""Magnitude pruning of the BiGRU CTC model.

Structured: `prune_structured` keeps the strongest GRU units (per layer and direction), projection outputs and
convolution channels and slices every matrix that touches them, so the model really shrinks (a smaller
ModelConfig). A unit's strength is the product of the L2 norms of its incoming and outgoing weights (outgoing
through the LayerNorm gain where one sits between). Unstructured: `magnitude_masks` zeroes the smallest weights
of all weight matrices together (one global threshold) at a target sparsity.
"""

from __future__ import annotations

import dataclasses

import torch

from metarecipe.config import ConfigError
from metarecipe.models.ctc_model import BatchedCTCModel


def weight_names(params) -> list[str]:
    """The weight matrices and kernels (no biases, no LayerNorm) that unstructured pruning thins."""
    return [n for n in params if n.endswith(("_weight", "_w_ih", "_w_hh")) and not n.startswith("norm")]


def check_sparsity(sparsity: float) -> None:
    """ConfigError unless 0 <= sparsity < 1."""
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity must be in [0, 1), got {sparsity:g}")


def check_keep(keep: float, what: str) -> None:
    """ConfigError unless 0 < keep <= 1."""
    if not 0.0 < keep <= 1.0:
        raise ConfigError(f"{what} must be in (0, 1], got {keep:g}")


def magnitude_masks(params: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """name -> bool mask (True: kept) for every weight matrix, zeroing the `sparsity` share of all their
    entries with the smallest magnitudes (one global threshold)."""
    check_sparsity(sparsity)
    names = weight_names(params)
    magnitudes = torch.cat([params[n].detach().abs().flatten() for n in names])
    pruned = int(sparsity * magnitudes.numel())
    if pruned == 0:
        return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    threshold = magnitudes.kthvalue(pruned).values
    return {n: params[n].detach().abs() > threshold for n in names}


def _gates(units: torch.Tensor, hidden: int) -> torch.Tensor:
    """Columns of the (., 3H) gate matrices that belong to `units` (r, z and n gates)."""
    return torch.cat([units, units + hidden, units + 2 * hidden])


def _strongest(incoming: torch.Tensor, outgoing: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices (ascending) of the `keep` units with the largest incoming x outgoing norm; rows are units."""
    score = incoming.flatten(1).norm(dim=1) * outgoing.flatten(1).norm(dim=1)
    return score.topk(keep).indices.sort().values


def _kept(size: int, keep: float) -> int:
    return max(1, round(size * keep))


def prune_structured(model: BatchedCTCModel, keep_units: float = 1.0,
                     keep_channels: float = 1.0) -> BatchedCTCModel:
    """A smaller model: `keep_units` of the GRU units of every layer and direction and of the projection's
    outputs, `keep_channels` of each convolution's channels, chosen by magnitude (module docstring)."""
    check_keep(keep_units, "keep_units")
    check_keep(keep_channels, "keep_channels")
    cfg, p = model.config, {n: v.detach() for n, v in model.params.items()}
    h, d, c = cfg.gru_hidden, cfg.d_model, cfg.conv_channels
    freq = p["proj_weight"].shape[0] // c
    new_h, new_d, new_c = _kept(h, keep_units), _kept(d, keep_units), _kept(c, keep_channels)

    conv1 = _strongest(p["conv1_weight"], p["conv2_weight"].transpose(0, 1), new_c)
    conv2 = _strongest(p["conv2_weight"][:, conv1], p["proj_weight"].view(c, freq, d), new_c)
    layer0_in = torch.cat([p["gru0_fw_w_ih"], p["gru0_bw_w_ih"]], dim=1)
    proj = _strongest(p["proj_weight"].t(), layer0_in, new_d)
    out = {"conv1_weight": p["conv1_weight"][conv1], "conv1_bias": p["conv1_bias"][conv1],
           "conv2_weight": p["conv2_weight"][conv2][:, conv1], "conv2_bias": p["conv2_bias"][conv2],
           "proj_weight": p["proj_weight"].view(c, freq, d)[conv2].reshape(new_c * freq, d)[:, proj],
           "proj_bias": p["proj_bias"][proj]}
    inputs = proj  # rows of this layer's w_ih that stay
    for layer in range(cfg.gru_layers):
        last = layer == cfg.gru_layers - 1
        gain = p[f"norm{layer}_weight"].abs().unsqueeze(1)
        following = p["head_weight"] if last else torch.cat([p[f"gru{layer + 1}_fw_w_ih"],
                                                             p[f"gru{layer + 1}_bw_w_ih"]], dim=1)
        kept_units = []
        for offset, direction in ((0, "fw"), (h, "bw")):
            q = f"gru{layer}_{direction}"
            incoming = torch.cat([p[f"{q}_w_ih"], p[f"{q}_w_hh"]]).view(-1, 3, h).permute(2, 0, 1)
            outgoing = (gain * following)[offset:offset + h]
            units = _strongest(incoming, outgoing, new_h)
            cols = _gates(units, h)
            out.update({f"{q}_w_ih": p[f"{q}_w_ih"][inputs][:, cols], f"{q}_w_hh": p[f"{q}_w_hh"][units][:, cols],
                        f"{q}_b_ih": p[f"{q}_b_ih"][cols], f"{q}_b_hh": p[f"{q}_b_hh"][cols]})
            kept_units.append(units + offset)
        inputs = torch.cat(kept_units)
        out.update({f"norm{layer}_weight": p[f"norm{layer}_weight"][inputs],
                    f"norm{layer}_bias": p[f"norm{layer}_bias"][inputs]})
    out.update({"head_weight": p["head_weight"][inputs], "head_bias": p["head_bias"]})

    pruned = BatchedCTCModel(dataclasses.replace(cfg, conv_channels=new_c, d_model=new_d, gru_hidden=new_h))
    with torch.no_grad():
        for name, value in pruned.params.items():
            value.copy_(out[name])
    return pruned.eval()
