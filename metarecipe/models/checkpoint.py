"""Model files: a CTC model's config, parameters and token table in one torch file, loaded without pickle code.

A progressive network (metarecipe.models.progressive) also stores its frozen source columns ("columns").

Read with ``torch.load(weights_only=True)``: only tensors, dicts, lists, strings and numbers come back.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from metarecipe.kernels.compact import read_weights_only
from metarecipe.models.ctc_model import BatchedCTCModel, ModelConfig, parameter_shapes
from metarecipe.models.progressive import ProgressiveCTCModel, lateral_shapes
from metarecipe.text.tokens import TokenTable

FORMAT = "metarecipe-ctc-model-1"


def _cpu(params) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in params.items()}


def save_model(path, model: BatchedCTCModel | ProgressiveCTCModel, tokens: TokenTable,
               info: dict | None = None) -> None:
    """Writes model (config and parameters), its token table and an info dict (str/number values) to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "config": dataclasses.asdict(model.config), "tokens": list(tokens.symbols),
               "params": _cpu(model.params), "info": dict(info or {})}
    if isinstance(model, ProgressiveCTCModel):
        payload["columns"] = [_cpu(column.params) for column in model.columns]
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _checked(path, params, shapes: dict, what: str) -> dict:
    for name, shape in shapes.items():
        if name not in params or tuple(params[name].shape) != shape:
            found = tuple(params[name].shape) if name in params else "missing"
            raise ValueError(f"{path}: {what} parameter {name} should be {shape}, found {found}")
    return params


def _filled(model, params: dict):
    with torch.no_grad():
        for name, p in model.params.items():
            p.copy_(params[name])
    return model


def load_model(path) -> tuple[BatchedCTCModel | ProgressiveCTCModel, TokenTable, dict]:
    """(model on the CPU in eval mode, token table, info) from a file written by save_model."""
    return model_from_payload(read_weights_only(path), path)


def model_from_payload(payload, path) -> tuple[BatchedCTCModel | ProgressiveCTCModel, TokenTable, dict]:
    """load_model of a file's content already read (read_weights_only); path names it in errors."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a metarecipe model file (format {FORMAT} expected)")
    config = ModelConfig(**payload["config"])
    tokens = TokenTable(payload["tokens"])
    if config.vocab_size != len(tokens):
        raise ValueError(f"{path}: {config.vocab_size} outputs but {len(tokens)} tokens")
    shapes = parameter_shapes(config)
    if "columns" not in payload:
        model = _filled(BatchedCTCModel(config), _checked(path, payload["params"], shapes, "model"))
        return model.eval(), tokens, payload.get("info", {})
    columns = [_filled(BatchedCTCModel(config), _checked(path, c, shapes, f"source column {i}"))
               for i, c in enumerate(payload["columns"])]
    model = ProgressiveCTCModel(columns)
    own = _checked(path, payload["params"], shapes | lateral_shapes(config, len(columns)), "progressive")
    return _filled(model, own).eval(), tokens, payload.get("info", {})
