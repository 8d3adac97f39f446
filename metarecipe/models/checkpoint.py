"""Model files: a CTC model's config, parameters and token table in one torch file, loaded without pickle code.

Read with ``torch.load(weights_only=True)``: only tensors, dicts, lists, strings and numbers come back.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import torch

from metarecipe.models.ctc_model import BatchedCTCModel, ModelConfig, parameter_shapes
from metarecipe.text.tokens import TokenTable

FORMAT = "metarecipe-ctc-model-1"


def save_model(path, model: BatchedCTCModel, tokens: TokenTable, info: dict | None = None) -> None:
    """Writes model (config and parameters), its token table and an info dict (str/number values) to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "config": dataclasses.asdict(model.config), "tokens": list(tokens.symbols),
               "params": {name: p.detach().cpu().clone() for name, p in model.params.items()},
               "info": dict(info or {})}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_model(path) -> tuple[BatchedCTCModel, TokenTable, dict]:
    """(model on the CPU in eval mode, token table, info) from a file written by save_model."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a readable model file ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a metarecipe model file (format {FORMAT} expected)")
    config = ModelConfig(**payload["config"])
    tokens = TokenTable(payload["tokens"])
    if config.vocab_size != len(tokens):
        raise ValueError(f"{path}: {config.vocab_size} outputs but {len(tokens)} tokens")
    shapes = parameter_shapes(config)
    params = payload["params"]
    for name, shape in shapes.items():
        if name not in params or tuple(params[name].shape) != shape:
            found = tuple(params[name].shape) if name in params else "missing"
            raise ValueError(f"{path}: parameter {name} should be {shape}, found {found}")
    model = BatchedCTCModel(config)
    with torch.no_grad():
        for name, p in model.params.items():
            p.copy_(params[name])
    return model.eval(), tokens, payload.get("info", {})
