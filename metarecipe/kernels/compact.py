"""The inference runtime of compressed models: one file, loaded and run with torch and metarecipe.kernels only.

A compact model file (written by metarecipe.compress.export) holds a BiGRU CTC model for CPU inference:

    {"format": FORMAT, "config": {num_mel_bins, conv_channels, d_model, gru_hidden, gru_layers, vocab_size},
     "tokens": [symbol, ...], "info": {...}, "tensors": {name: entry}}

Tensor names and orientations are those of metarecipe.models.ctc_model (linear weights (in, out)). An entry is
a float32 tensor, or a dict: {"int8": (in, out) int8, "scale": (out,) float32} is a weight quantized per output
channel (value = int8 * scale); {"mask": packed uint8 bits, "shape": [...], "values": the nonzero entries in
row-major order} is a sparse tensor (unstructured pruning), its values float32, or int8 with a "scale" (out,).
It loads with ``torch.load(weights_only=True)``. Every metarecipe model file (compact or training, and Meta-SGD's
rates) also holds "sha256": the SHA-256 of its content (`payload_digest`), which `read_weights_only` recomputes;
a file without it or whose content differs is a ModelFileError naming the file.

Int8 input products run on PyTorch's fbgemm/x86 dynamic quantized linear where that engine exists, else on the
dequantized weights; int8 recurrent weights run the int8 recurrence (kernels.gru.gru_inference_int8: the hidden
state quantized per row each step, AVX-512 VNNI where the CPU has it).
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import warnings

import torch
import torch.nn.functional as F

from metarecipe.errors import InputError
from metarecipe.kernels.beam_search import BeamSearchOptions, LMTables, ctc_beam_search
from metarecipe.kernels.conv import conv1_relu
from metarecipe.kernels.gru import Int8Recurrent, gru_inference, gru_inference_int8

FORMAT = "metarecipe-compact-ctc-1"
CONFIG_KEYS = ("num_mel_bins", "conv_channels", "d_model", "gru_hidden", "gru_layers", "vocab_size")
DIGEST_KEY = "sha256"
_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


class ModelFileError(InputError, ValueError):
    """A model file that cannot be read, is damaged or holds something else; the message names the file."""


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a compact model with this config (the training model's layout)."""
    c, d, h = config["conv_channels"], config["d_model"], config["gru_hidden"]
    freq = config["num_mel_bins"]
    for _ in range(2):
        freq = (freq - 3) // 2 + 1
    shapes = {"conv1_weight": (c, 1, 3, 3), "conv1_bias": (c,), "conv2_weight": (c, c, 3, 3), "conv2_bias": (c,),
              "proj_weight": (c * freq, d), "proj_bias": (d,)}
    inputs = d
    for layer in range(config["gru_layers"]):
        for direction in ("fw", "bw"):
            p = f"gru{layer}_{direction}"
            shapes.update({f"{p}_w_ih": (inputs, 3 * h), f"{p}_w_hh": (h, 3 * h), f"{p}_b_ih": (3 * h,),
                           f"{p}_b_hh": (3 * h,)})
        shapes.update({f"norm{layer}_weight": (2 * h,), f"norm{layer}_bias": (2 * h,)})
        inputs = 2 * h
    shapes.update({"head_weight": (2 * h, config["vocab_size"]), "head_bias": (config["vocab_size"],)})
    return shapes


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor (any shape) -> uint8 (ceil(numel / 8),), most significant bit first."""
    flat = mask.flatten().to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)])
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of pack_bits: a bool tensor of `shape`."""
    bits = (packed.unsqueeze(1) & _BIT_WEIGHTS) != 0
    return bits.flatten()[:math.prod(shape)].view(*shape)


def _filled(entry, name: str) -> torch.Tensor:
    """The stored values of an int8 or sparse entry as a dense tensor of their dtype (zeros filled in)."""
    if "mask" not in entry:
        return entry["int8"]
    mask = unpack_bits(entry["mask"], entry["shape"])
    if entry["values"].numel() != int(mask.sum()):
        raise ModelFileError(f"{name}: {entry['values'].numel()} stored values for {int(mask.sum())} nonzero positions")
    out = torch.zeros(mask.shape, dtype=entry["values"].dtype)
    out[mask] = entry["values"]
    return out


def dense(entry, name: str = "tensor") -> torch.Tensor:
    """The float32 value of a stored entry (see the module docstring)."""
    if isinstance(entry, torch.Tensor):
        return entry.float()
    if not isinstance(entry, dict) or not ({"int8", "mask"} & set(entry)):
        raise ModelFileError(f"{name}: expected a tensor or an int8 or sparse entry, found {type(entry).__name__}")
    out = _filled(entry, name).float()
    return out * entry["scale"].float() if "scale" in entry else out


def int8_of(entry, name: str = "tensor") -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, scales (out,)) of an int8 entry (is_int8), dense or sparse."""
    return _filled(entry, name).to(torch.int8), entry["scale"].float()


def is_int8(entry) -> bool:
    return isinstance(entry, dict) and "scale" in entry


def quantized_engine() -> str | None:
    """PyTorch's quantized engine for int8 linear layers here (x86 or fbgemm), or None."""
    engine = torch.backends.quantized.engine
    return engine if engine in ("x86", "fbgemm") else None


class Linear:
    """x (..., in) -> x W + b (..., out): float32, or int8 weights (per output channel) on the quantized engine."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, scales: torch.Tensor | None = None):
        self.weight, self.bias, self.packed = weight, bias, None
        if scales is not None and quantized_engine() is not None:
            zero = torch.zeros(weight.shape[1], dtype=torch.long)
            with warnings.catch_warnings():  # PyTorch 2.13 warns that quantized tensors are deprecated
                warnings.simplefilter("ignore", UserWarning)
                q = torch.quantize_per_channel(weight.t().contiguous(), scales.float(), zero, 0, torch.qint8)
                self.packed = torch.ops.quantized.linear_prepack(q, bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.packed is not None:
            out = torch.ops.quantized.linear_dynamic(flat, self.packed, True)
        else:
            out = torch.addmm(self.bias, flat, self.weight)
        return out.view(*x.shape[:-1], out.shape[-1])


def _subsampled(lengths: torch.Tensor) -> torch.Tensor:
    for _ in range(2):
        lengths = torch.div(lengths - 3, 2, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


class CompactCTCModel:
    """A loaded compact model: `log_probs(feats, lengths)` and `recognize(feats, lengths)` on the CPU."""

    def __init__(self, config: dict, tokens: list[str], tensors: dict, info: dict | None = None,
                 source="model"):
        """ModelFileError naming `source` and the tensor when config, tokens and tensors disagree."""
        _check_config(config, tokens, source)
        self.config, self.tokens, self.info = dict(config), list(tokens), dict(info or {})
        self.values = {name: dense(entry, f"{source}: {name}") for name, entry in tensors.items()}
        for name, shape in expected_shapes(config).items():
            if name not in self.values:
                raise ModelFileError(f"{source}: tensor {name} {shape} is missing")
            if tuple(self.values[name].shape) != shape:
                raise ModelFileError(f"{source}: tensor {name} should be {shape} for this config, found "
                                 f"{tuple(self.values[name].shape)}")
        self.int8 = sorted(name for name, entry in tensors.items() if is_int8(entry))
        self.linears, self.recurrent = {}, {}
        for name, entry in tensors.items():
            if name.endswith("_w_hh"):
                self.recurrent[name] = Int8Recurrent(*int8_of(entry, f"{source}: {name}")) if is_int8(entry) \
                    else self.values[name]
            if name == "proj_weight" or name == "head_weight" or name.endswith("_w_ih"):
                bias = self.values[name.replace("_weight", "_bias").replace("_w_ih", "_b_ih")]
                scales = entry["scale"] if is_int8(entry) else None
                self.linears[name] = Linear(self.values[name], bias, scales)

    def parameter_count(self) -> int:
        """Nonzero parameters."""
        return sum(int((v != 0).sum()) for v in self.values.values())

    def log_probs(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, F) float32, lengths (B,) -> log-probabilities (B, T', V) and lengths (B,), T' ~ T/4."""
        v = self.values
        with torch.no_grad():
            x = conv1_relu(feats, v["conv1_weight"], v["conv1_bias"])
            x = torch.relu(F.conv2d(x, v["conv2_weight"], v["conv2_bias"], stride=2))
            b, c, t, f = x.shape
            x = self.linears["proj_weight"](x.permute(0, 2, 1, 3).reshape(b, t, c * f))
            out_lengths = _subsampled(lengths)
            valid = (torch.arange(t)[:, None] < out_lengths[None, :]).float()  # (T', B)
            for layer in range(self.config["gru_layers"]):
                directions = []
                for direction in ("fw", "bw"):
                    p = f"gru{layer}_{direction}"
                    gates = self.linears[f"{p}_w_ih"](x).transpose(0, 1)  # (T', B, 3H)
                    w_hh, reverse = self.recurrent[f"{p}_w_hh"], direction == "bw"
                    if isinstance(w_hh, Int8Recurrent):
                        hidden = gru_inference_int8(gates, w_hh, v[f"{p}_b_hh"], valid, reverse)
                    else:
                        hidden = gru_inference(gates, w_hh, v[f"{p}_b_hh"], valid, reverse)
                    directions.append(hidden.transpose(0, 1))
                x = torch.cat(directions, dim=-1)
                x = F.layer_norm(x, x.shape[-1:], v[f"norm{layer}_weight"], v[f"norm{layer}_bias"])
            return self.linears["head_weight"](x).log_softmax(-1), out_lengths

    def text(self, ids: list[int]) -> str:
        """Token ids -> words separated by single spaces."""
        symbols = ("" if s == "<blk>" else " " if s == "<space>" else s for s in (self.tokens[i] for i in ids))
        return " ".join("".join(symbols).split())

    def recognize(self, feats: torch.Tensor, lengths: torch.Tensor, options: BeamSearchOptions | None = None,
                  lm: LMTables | None = None) -> list[str]:
        """feats (B, T, F), lengths (B,) -> the best transcript of each utterance (CTC prefix beam search)."""
        log_probs, out_lengths = self.log_probs(feats, lengths)
        found = ctc_beam_search(log_probs, out_lengths, options, lm, self.tokens.index("<blk>"),
                                self.tokens.index("<space>"))
        return [self.text(hyps[0].tokens) if hyps else "" for hyps in found]


def _check_config(config: dict, tokens: list, source) -> None:
    missing = [key for key in CONFIG_KEYS if not isinstance(config.get(key), int)]
    if missing:
        raise ModelFileError(f"{source}: config lacks integer {', '.join(missing)}")
    if len(tokens) != config["vocab_size"]:
        raise ModelFileError(f"{source}: {config['vocab_size']} outputs but {len(tokens)} tokens")


def _canonical(value, tensors: list[torch.Tensor]):
    """value as JSON-able data, dict keys in sorted order, each tensor replaced by its dtype and shape (the
    tensor itself appended to `tensors`, in that order); TypeError for anything a model file does not hold."""
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return {"tensor": len(tensors) - 1, "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, dict):
        return {str(key): _canonical(value[key], tensors) for key in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_canonical(item, tensors) for item in value]
    if value is None or isinstance(value, str | int | float):
        return value
    raise TypeError(f"a {type(value).__name__} value")


def payload_digest(payload: dict) -> str:
    """SHA-256 (hex) of a model file's content but its DIGEST_KEY: the canonical JSON of its structure and
    non-tensor values (keys sorted; tensors as dtype and shape), then every tensor's bytes in that order."""
    tensors: list[torch.Tensor] = []
    skeleton = _canonical({k: v for k, v in payload.items() if k != DIGEST_KEY}, tensors)
    digest = hashlib.sha256(json.dumps(skeleton, sort_keys=True, separators=(",", ":")).encode())
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def seal(payload: dict) -> dict:
    """The payload with its content hash, as model files are written."""
    return {**payload, DIGEST_KEY: payload_digest(payload)}


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def read_weights_only(path, kind: str = "model file") -> dict:
    """The content of a model file (torch.load with weights_only=True) whose content hash matches it, or
    ModelFileError naming the file (`kind`: what the file should be, for that message)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise ModelFileError(f"{path}: not a readable {kind} ({err.strerror or _first_line(err)})") from err
    except pickle.UnpicklingError as err:  # torch's text would advise weights_only=False: code from the file
        raise ModelFileError(f"{path}: not a readable {kind} (not a torch file of tensors, numbers, strings, "
                             "lists and dicts)") from err
    except Exception as err:  # torch.load of arbitrary bytes fails in many ways; all mean the same here
        raise ModelFileError(f"{path}: not a readable {kind} ({_first_line(err)})") from err
    if not isinstance(payload, dict) or not isinstance(payload.get(DIGEST_KEY), str):
        raise ModelFileError(f"{path}: not a metarecipe {kind}: it holds no content hash ({DIGEST_KEY}; files "
                             "written before metarecipe stored one must be written again)")
    try:
        digest = payload_digest(payload)
    except TypeError as err:
        raise ModelFileError(f"{path}: not a metarecipe {kind}: it holds {err}") from err
    if digest != payload[DIGEST_KEY]:
        raise ModelFileError(f"{path}: damaged {kind}: its content does not match the SHA-256 stored in it")
    return payload


def is_compact(payload) -> bool:
    """True when a file's content (read_weights_only) is a compact model."""
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def compact_from_payload(payload, path) -> CompactCTCModel:
    """The compact model of a file's content (shapes checked against its config); ModelFileError naming path."""
    if not is_compact(payload):
        raise ModelFileError(f"{path}: not a compact model file (format {FORMAT} expected)")
    malformed = [key for key, kind in (("config", dict), ("tokens", list), ("tensors", dict), ("info", dict))
                 if not isinstance(payload.get(key), kind)]
    if malformed:
        raise ModelFileError(f"{path}: a compact model file without a well-formed {', '.join(malformed)}")
    return CompactCTCModel(payload["config"], payload["tokens"], payload["tensors"], payload["info"], path)


def load_compact(path) -> CompactCTCModel:
    """The compact model in `path` (weights only, shapes checked against its config)."""
    return compact_from_payload(read_weights_only(path), path)
