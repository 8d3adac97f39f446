"""Progressive networks (Rusu et al. 2016) for a target language: frozen source columns, a new column.

The new column has the source architecture; every one of its encoder layers and its output layer also receives
the frozen columns' input to the same layer through a lateral connection (a linear map, one per layer), so the
target column can reuse source features without overwriting them. `new_column="source"` starts the new column
as a copy of the first source column with zero laterals, so training starts from the source model; "random"
starts it and the laterals from a fresh initialisation, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from metarecipe.models import batched_ops as ops
from metarecipe.models.ctc_model import BatchedCTCModel, ctc_forward, initial_value, parameter_shapes, stacked
from metarecipe.models.encoders import encoder_dim, layer_input_dims


def lateral_shapes(cfg, num_columns: int) -> dict[str, tuple[int, ...]]:
    """lat{l}_weight (K * width_l, width_l) for each encoder layer l; lat_head_weight (K * encoder_dim, V)."""
    shapes = {f"lat{layer}_weight": (num_columns * width, width) for layer, width in enumerate(layer_input_dims(cfg))}
    shapes["lat_head_weight"] = (num_columns * encoder_dim(cfg), cfg.vocab_size)
    return shapes


class ProgressiveCTCModel(nn.Module):
    """`params` holds the trainable new column and its laterals; the source columns are frozen."""

    def __init__(self, columns: list[BatchedCTCModel], new_column: str = "source"):
        super().__init__()
        if not columns or any(c.config != columns[0].config for c in columns):
            raise ValueError("progressive networks need at least one source column, all of one configuration")
        if new_column not in ("source", "random"):
            raise ValueError(f"new_column must be 'source' or 'random', got {new_column!r}")
        self.config = columns[0].config
        self.columns = nn.ModuleList(columns).requires_grad_(False)
        shapes = parameter_shapes(self.config)
        column = {n: p.detach().clone() for n, p in columns[0].params.items()} if new_column == "source" else \
            {n: initial_value(n, shapes, self.config) for n in shapes}
        laterals = {}
        for name, shape in lateral_shapes(self.config, len(columns)).items():
            laterals[name] = torch.zeros(shape) if new_column == "source" else \
                torch.empty(shape).uniform_(-shape[0] ** -0.5, shape[0] ** -0.5)
        self.params = nn.ParameterDict({n: nn.Parameter(v) for n, v in (column | laterals).items()})

    def stacked(self, num_tasks: int) -> dict[str, torch.Tensor]:
        return stacked(self.params, num_tasks)

    def functional_forward(self, params: dict[str, torch.Tensor], feats: torch.Tensor, lengths: torch.Tensor,
                           gru_backend: str | None = None):
        """feats (N, B, T, F), lengths (N, B) -> log-probabilities (N, B, T', V), lengths (N, B)."""
        n = feats.shape[0]
        taps = [[] for _ in self.columns]
        with torch.no_grad():
            for column, tapped in zip(self.columns, taps, strict=True):
                column.functional_forward(column.stacked(n), feats, lengths, gru_backend, taps=tapped)
        names = [f"lat{layer}_weight" for layer in range(len(taps[0]) - 1)] + ["lat_head_weight"]
        laterals = [ops.linear(torch.cat([t[i] for t in taps], dim=-1), params[name]) for i, name in enumerate(names)]
        own = {k: v for k, v in params.items() if not k.startswith("lat")}
        return ctc_forward(self.config, own, feats, lengths, gru_backend, laterals=laterals)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        log_probs, out_lengths = self.functional_forward(self.stacked(1), feats.unsqueeze(0), lengths.unsqueeze(0))
        return log_probs[0], out_lengths[0]
