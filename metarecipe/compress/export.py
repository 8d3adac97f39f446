"""Export of a (pruned) model to one compact file for metarecipe.kernels.compact: float32 or int8 weights,
sparse matrices stored as a bitmask and their nonzero values when that is smaller. The file carries its content
hash, as every model file (metarecipe.io.model_files.write_model_file)."""

from __future__ import annotations

import dataclasses

import torch

from metarecipe.compress.quantize import is_quantized_weight, quantize_per_channel
from metarecipe.errors import InputError
from metarecipe.io.model_files import write_model_file
from metarecipe.kernels.compact import CONFIG_KEYS, FORMAT, CompactCTCModel, pack_bits
from metarecipe.models.ctc_model import BatchedCTCModel, ModelConfig
from metarecipe.text.tokens import TokenTable


class UnsupportedModel(InputError, ValueError):
    """A model the compact runtime cannot run (a Transformer encoder, a progressive network)."""


def check_supported(model, path="model") -> None:
    """UnsupportedModel naming the layer when the compact runtime cannot run `model`."""
    if not isinstance(model, BatchedCTCModel):
        raise UnsupportedModel(f"{path}: a {type(model).__name__} (progressive columns with lateral layers) cannot "
                               "be compressed; compress a plain BiGRU CTC model")
    if model.config.encoder != "gru":
        raise UnsupportedModel(f"{path}: its {model.config.encoder} encoder layers are not supported; compression "
                               "handles the BiGRU encoder (encoder: gru)")


def model_from_compact(compact: CompactCTCModel) -> BatchedCTCModel:
    """The training model holding a compact model's (dequantized) weights: to prune or quantize it further."""
    model = BatchedCTCModel(ModelConfig(encoder="gru", **compact.config))
    with torch.no_grad():
        for name, p in model.params.items():
            p.copy_(compact.values[name])
    return model.eval()


def _entry(value: torch.Tensor, int8: bool):
    """The smallest stored form of one tensor: dense or sparse, float32 or int8 (module docstring of compact)."""
    value = value.detach().float().contiguous()
    scale = None
    if int8:
        value, scale = quantize_per_channel(value)
    mask = value != 0
    dense_bytes = value.numel() * value.element_size()
    sparse_bytes = (value.numel() + 7) // 8 + int(mask.sum()) * value.element_size()
    entry = ({"mask": pack_bits(mask), "shape": list(value.shape), "values": value[mask].clone()}
             if sparse_bytes < dense_bytes else {"int8": value} if int8 else value)
    if scale is not None:
        entry["scale"] = scale
    return entry


def compact_payload(model: BatchedCTCModel, tokens: TokenTable, int8: bool = False, info: dict | None = None,
                    bundle: dict | None = None) -> dict:
    """The compact file's content for `model` (its linear and recurrent weights in int8 when `int8`), with the
    front end and decoding bundle of the file it came from (ModelFile.bundle)."""
    check_supported(model)
    config = {key: value for key, value in dataclasses.asdict(model.config).items() if key in CONFIG_KEYS}
    tensors = {name: _entry(p, int8 and is_quantized_weight(name)) for name, p in model.params.items()}
    return {"format": FORMAT, "config": config, "tokens": list(tokens.symbols), "info": dict(info or {}),
            "tensors": tensors, **(bundle or {})}


def export_compact(model: BatchedCTCModel, tokens: TokenTable, path, int8: bool = False,
                   info: dict | None = None, bundle: dict | None = None) -> CompactCTCModel:
    """Writes the compact file (atomically) and returns the model it holds, as the runtime will run it."""
    payload = compact_payload(model, tokens, int8, info, bundle)
    compact = CompactCTCModel(payload["config"], payload["tokens"], payload["tensors"], payload["info"], path)
    write_model_file(path, payload)
    return compact
