"""Export of the CTC acoustic model to ONNX: float32, and int8 weights through onnxruntime's dynamic quantization,
each checked against the torch model in onnxruntime before it is written.

The graph comes from `OnnxCTCModel`, the model as plain torch layers (torch.nn.GRU per direction, the backward
one run on each sequence reversed within its length by a gather), traced by torch's TorchScript exporter into
ONNX's own GRU, LayerNormalization and MatMul operators, batch and time dynamic. Inputs: `feats` (B, T, F) float32,
features normalised as in training, and `lengths` (B,) int64, at most T; outputs: `log_probs` (B, T', V) float32
and `out_lengths` (B,) int64. Frames past a length hold what the torch model gives there, which is not used.

int8: onnxruntime.quantization.quantize_dynamic turns every MatMul with a constant weight (the projection, the
head, the Transformer's linear layers) into int8 weights, per output channel, with activations quantized at run
time. onnxruntime has no quantized GRU, so a BiGRU model keeps its recurrent layers in float32; the convolutions
stay float32 too (under 1% of the weights, and onnxruntime's ConvInteger is slower than its float Conv).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from metarecipe.errors import InputError
from metarecipe.models.ctc_model import BatchedCTCModel

DEFAULT_OPSET = 17
OPSETS = range(13, 21)  # torch's TorchScript exporter writes up to 20; 17 and up have LayerNormalization
INPUT_NAMES = ("feats", "lengths")
OUTPUT_NAMES = ("log_probs", "out_lengths")
QUANTIZED_OPS = ("MatMul",)


class ExportError(InputError, ValueError):
    """A model that cannot be exported, or an export whose outputs differ from the model's."""


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames left after two 3x3 stride-2 unpadded convolutions: (B,) int64 -> (B,) int64, never negative.

    Written with nonnegative operands only, where ONNX's truncating integer division is a floor."""
    for _ in range(2):
        lengths = torch.div((lengths - 1).clamp(min=0), 2, rounding_mode="floor")
    return lengths


def reversal_index(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T) int64 index that reverses each sequence within its length and keeps the frames past it in place
    (its own inverse)."""
    steps = torch.arange(frames, device=lengths.device)[None, :]
    return torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)


def gather_frames(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, D) with frames reordered per sequence by index (B, T) -> (B, T, D)."""
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))


def sinusoidal_positions(frames: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """(T, D) sine/cosine position encodings, interleaved as metarecipe.models.encoders writes them."""
    position = torch.arange(frames, device=like.device, dtype=like.dtype)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, device=like.device, dtype=like.dtype) * (-math.log(10000.0) / dim))
    return torch.stack([torch.sin(position * rate), torch.cos(position * rate)], dim=-1).reshape(frames, dim)


def _gru(weights: dict[str, torch.Tensor], prefix: str) -> nn.GRU:
    """nn.GRU holding one direction of a BiGRU layer (metarecipe's (I, 3H) layout transposed; same gate order)."""
    w_ih, w_hh = weights[f"{prefix}_w_ih"], weights[f"{prefix}_w_hh"]
    gru = nn.GRU(w_ih.shape[0], w_hh.shape[0], batch_first=True)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(w_ih.t())
        gru.weight_hh_l0.copy_(w_hh.t())
        gru.bias_ih_l0.copy_(weights[f"{prefix}_b_ih"])
        gru.bias_hh_l0.copy_(weights[f"{prefix}_b_hh"])
    return gru


class OnnxCTCModel(nn.Module):
    """A BatchedCTCModel (BiGRU or Transformer encoder) as plain torch layers, for torch.onnx.export:
    forward(feats (B, T, F) float32, lengths (B,) int64) -> log_probs (B, T', V), out_lengths (B,) int64."""

    def __init__(self, model: BatchedCTCModel):
        super().__init__()
        self.config = cfg = model.config
        weights = {name: p.detach().float().cpu() for name, p in model.params.items()}
        self.weights = nn.ParameterDict({name: nn.Parameter(value, requires_grad=False)
                                         for name, value in weights.items() if not name.startswith("gru")})
        self.grus = nn.ModuleDict({f"{layer}_{d}": _gru(weights, f"gru{layer}_{d}")
                                   for layer in range(cfg.gru_layers if cfg.encoder == "gru" else 0)
                                   for d in ("fw", "bw")})
        # LayerNorm widths as constants (a width read from a tensor's shape would be traced as a dynamic one)
        self.widths = {name[:-len("_weight")]: int(value.shape[0]) for name, value in weights.items()
                       if "norm" in name and name.endswith("_weight")}
        self.eval()

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return x @ self.weights[f"{name}_weight"] + self.weights[f"{name}_bias"]

    def _layer_norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (self.widths[name],), self.weights[f"{name}_weight"], self.weights[f"{name}_bias"], 1e-5)

    def _gru_encoder(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """BiGRU layers with LayerNorm, outputs past each length zero as in the training model (B, T', D)."""
        valid = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).to(x.dtype)[:, :, None]
        reverse = reversal_index(lengths, x.shape[1])
        for layer in range(self.config.gru_layers):
            forward, _ = self.grus[f"{layer}_fw"](x)
            backward, _ = self.grus[f"{layer}_bw"](gather_frames(x, reverse))
            both = torch.cat([forward, gather_frames(backward, reverse)], dim=-1) * valid
            x = self._layer_norm(both, f"norm{layer}")
        return x

    def _attention(self, x: torch.Tensor, prefix: str, key_mask: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention over valid keys: x (B, T, D), key_mask (B, T) -> (B, T, D)."""
        b, t, d = x.shape
        heads = self.config.attention_heads
        width = self.config.d_model // heads  # a constant, not read from the traced shape
        q, k, v = (y.reshape(b, t, heads, width).transpose(1, 2)
                   for y in self._linear(x, f"{prefix}_qkv").chunk(3, dim=-1))
        scores = q @ k.transpose(-1, -2) / math.sqrt(width)
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(x.dtype).min)
        context = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
        return self._linear(context, f"{prefix}_out")

    def _transformer_encoder(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Pre-LayerNorm Transformer layers and a final LayerNorm: (B, T', D) -> (B, T', D)."""
        t = x.shape[1]
        x = x + sinusoidal_positions(t, x.shape[-1], x)
        key_mask = torch.arange(t)[None, :] < lengths[:, None]
        for layer in range(self.config.transformer_layers):
            p = f"tf{layer}"
            x = x + self._attention(self._layer_norm(x, f"{p}_norm1"), p, key_mask)
            hidden = torch.relu(self._linear(self._layer_norm(x, f"{p}_norm2"), f"{p}_ff1"))
            x = x + self._linear(hidden, f"{p}_ff2")
        return self._layer_norm(x, "tf_norm")

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights
        x = torch.relu(F.conv2d(feats.unsqueeze(1), w["conv1_weight"], w["conv1_bias"], stride=2))
        x = torch.relu(F.conv2d(x, w["conv2_weight"], w["conv2_bias"], stride=2))  # (B, C, T', F')
        b, c, t, f = x.shape
        x = self._linear(x.transpose(1, 2).reshape(b, t, c * f), "proj")
        out_lengths = subsampled_lengths(lengths)
        encode = self._gru_encoder if self.config.encoder == "gru" else self._transformer_encoder
        return self._linear(encode(x, out_lengths), "head").log_softmax(-1), out_lengths


def check_exportable(model, path) -> BatchedCTCModel:
    """The model to export, or ExportError naming path when it is not a plain CTC model."""
    if not isinstance(model, BatchedCTCModel):
        raise ExportError(f"{path}: a {type(model).__name__} (frozen source columns joined by lateral layers) "
                          "cannot be exported to ONNX; export a plain CTC model (BiGRU or Transformer encoder)")
    return model


def export_float32(model: BatchedCTCModel, opset: int = DEFAULT_OPSET) -> bytes:
    """The serialized float32 ONNX model (batch and time dynamic) of `model`."""
    if opset not in OPSETS:
        raise ExportError(f"ONNX opset {opset} is not supported; choose {OPSETS.start} to {OPSETS.stop - 1}")
    module = OnnxCTCModel(model)
    frames = 64
    example = (torch.zeros(2, frames, model.config.num_mel_bins), torch.tensor([frames, frames // 2]))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter's deprecation notices; nn.GRU's checks of its input, traced as constants; the
        # warning that nn.GRU's initial state may follow the traced batch size: the exporter makes it from the
        # input's shape (verify_export runs another batch size)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx|metarecipe")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.nn\.modules\.rnn")
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        torch.onnx.export(module, example, buffer, dynamo=False, opset_version=opset, input_names=INPUT_NAMES,
                          output_names=OUTPUT_NAMES,
                          dynamic_axes={"feats": {0: "batch", 1: "frames"}, "lengths": {0: "batch"},
                                        "log_probs": {0: "batch", 1: "out_frames"}, "out_lengths": {0: "batch"}})
    return buffer.getvalue()


class _SkipNote(logging.Filter):
    """Drops quantize_dynamic's advice to pre-process the model (its symbolic shape inference stops at the GRU
    and its graph optimizations run in onnxruntime's session anyway)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(float32: bytes) -> bytes:
    """The serialized ONNX model with int8 weights in every MatMul with a constant weight (module docstring)."""
    note = _SkipNote()
    logging.getLogger().addFilter(note)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(onnx.load_from_string(float32), out, op_types_to_quantize=list(QUANTIZED_OPS),
                             per_channel=True, weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
            return out.read_bytes()
    finally:
        logging.getLogger().removeFilter(note)


def onnx_session(serialized: bytes | str | Path, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime CPU session of an ONNX model (bytes or a path) running on `threads` threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no notes on shapes the graph cannot know ahead
    model = serialized if isinstance(serialized, bytes) else str(serialized)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def onnx_log_probs(session: ort.InferenceSession, feats: torch.Tensor,
                   lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exported model run in onnxruntime: feats (B, T, F), lengths (B,) -> log-probabilities (B, T', V)
    float32 and lengths (B,) int64, as torch tensors."""
    log_probs, out_lengths = session.run(list(OUTPUT_NAMES), {
        "feats": feats.detach().cpu().float().contiguous().numpy(),
        "lengths": lengths.detach().cpu().to(torch.int64).contiguous().numpy()})
    return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)


@dataclass
class Comparison:
    """An ONNX model's outputs against the torch model's, over valid frames."""

    max_abs_diff: float
    argmax_agreement: float  # share of valid frames with the same best token


def random_batch(num_mel_bins: int, seed: int = 0, frames: tuple[int, ...] = (301, 240, 97, 33, 7)):
    """Random normalised features (B, max frames, F) and their lengths (B,) int64 (frames are input frames)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(frames), max(frames), num_mel_bins, generator=g), torch.tensor(frames, dtype=torch.int64)


def compare(session: ort.InferenceSession, model: BatchedCTCModel, feats: torch.Tensor, lengths: torch.Tensor,
            what: str) -> Comparison:
    """Runs both models on feats (B, T, F), lengths (B,); ExportError naming `what` when the ONNX model's output
    lengths differ from the torch model's or its log-probabilities are not finite."""
    with torch.no_grad():
        want, want_lengths = model(feats, lengths)
    got, got_lengths = onnx_log_probs(session, feats, lengths)
    if not torch.equal(got_lengths, want_lengths.to(torch.int64)) or got.shape != want.shape:
        raise ExportError(f"{what}: outputs {tuple(got.shape)} with lengths {got_lengths.tolist()}, the torch "
                          f"model {tuple(want.shape)} with lengths {want_lengths.tolist()}")
    valid = torch.arange(got.shape[1])[None, :] < got_lengths[:, None]
    got, want = got[valid], want[valid].float()
    if not torch.isfinite(got).all():
        raise ExportError(f"{what}: its log-probabilities are not all finite")
    if got.numel() == 0:
        return Comparison(0.0, 1.0)
    return Comparison(float((got - want).abs().max()), float((got.argmax(-1) == want.argmax(-1)).float().mean()))


def verify_export(model: BatchedCTCModel, float32: bytes, int8: bytes | None, tolerance: float = 1e-3,
                  threads: int = 1, seed: int = 0) -> dict:
    """Runs the ONNX models in onnxruntime and the torch model on random features of several lengths (another
    batch size and length than the traced ones). ExportError when the float32 model's log-probabilities differ
    by more than `tolerance` over valid frames; the int8 model's difference is reported, not bounded.
    -> {"lengths", "seed", "threads", "tolerance", "float32": a Comparison as a dict, "int8": one or None}."""
    feats, lengths = random_batch(model.config.num_mel_bins, seed)
    fp32 = compare(onnx_session(float32, threads), model, feats, lengths, "float32 ONNX model")
    if not fp32.max_abs_diff <= tolerance:
        raise ExportError(f"the float32 ONNX model's log-probabilities differ from the torch model's by "
                          f"{fp32.max_abs_diff:.3g} (tolerance {tolerance:g}); nothing was written")
    quantized = None if int8 is None else compare(onnx_session(int8, threads), model, feats, lengths,
                                                  "int8 ONNX model")
    return {"lengths": lengths.tolist(), "seed": seed, "threads": threads, "tolerance": tolerance,
            "float32": dataclasses.asdict(fp32), "int8": None if quantized is None else dataclasses.asdict(quantized)}


def _dtype(elem_type: int) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name


def file_record(name: str, serialized: bytes) -> dict:
    """What export.json says of one ONNX file: name, size, SHA-256, opsets and stored weight elements by type."""
    proto = onnx.load_from_string(serialized)
    weights: dict[str, int] = {}
    for init in proto.graph.initializer:
        weights[_dtype(init.data_type)] = weights.get(_dtype(init.data_type), 0) + math.prod(init.dims)
    return {"file": name, "bytes": len(serialized), "sha256": hashlib.sha256(serialized).hexdigest(),
            "opsets": {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import},
            "weights": weights}


def _tensor_record(value: onnx.ValueInfoProto) -> dict:
    """Name, element type and shape (a name for each dynamic dimension) of a graph input or output."""
    tensor = value.type.tensor_type
    return {"name": value.name, "dtype": _dtype(tensor.elem_type),
            "shape": [d.dim_param if d.HasField("dim_param") else d.dim_value for d in tensor.shape.dim]}


def graph_record(model: BatchedCTCModel, serialized: bytes) -> dict:
    """What export.json says of the exported graph: its inputs and outputs as stored in it, how output lengths
    follow from input lengths, the model's config and the versions that made and checked it."""
    graph = onnx.load_from_string(serialized).graph
    return {"inputs": [_tensor_record(v) for v in graph.input], "outputs": [_tensor_record(v) for v in graph.output],
            "out_lengths": "two 3x3 stride-2 convolutions: floor((n - 1) / 2) twice, 0 below 3 frames",
            "config": dataclasses.asdict(model.config),
            "runtime": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                        "numpy": np.__version__}}
