"""Model files: a CTC model's config, parameters and token table in one torch file, loaded without pickle code.

A progressive network (metarecipe.models.progressive) also stores its frozen source columns ("columns").
Meta-SGD's learned rates go to a file of their own beside the model (`save_rates`, `load_rates`). A model file
(training or compact, metarecipe.kernels.compact) may also hold "frontend", the feature front end its training
features had (metarecipe.features.frontend), and "decoding", what `metarecipe bundle` packs for decoding (search
options, the LM or a verified reference to it), and "adaptation", how meta-train's algorithm adapts it
(metarecipe.meta.plan): `read_model_file` reads any of them.

Read with ``torch.load(weights_only=True)``: only tensors, dicts, lists, strings and numbers come back. Every file
carries the SHA-256 of its content (metarecipe.kernels.compact.payload_digest), checked on every load: a damaged
file is a ModelFileError naming it, never a model that runs.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from metarecipe.config import from_mapping
from metarecipe.features.frontend import Frontend, FrontendError
from metarecipe.io.atomic import write_atomic
from metarecipe.kernels.compact import (
    DIGEST_KEY,
    CompactCTCModel,
    ModelFileError,
    compact_from_payload,
    is_compact,
    read_weights_only,
    seal,
)
from metarecipe.models.ctc_model import BatchedCTCModel, ModelConfig, parameter_shapes
from metarecipe.models.progressive import ProgressiveCTCModel, lateral_shapes
from metarecipe.text.tokens import TokenTable

FORMAT = "metarecipe-ctc-model-1"
RATES_FORMAT = "metarecipe-metasgd-rates-1"


def _cpu(params) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in params.items()}


def write_model_file(path, payload: dict) -> None:
    """Writes a model file's payload with its content hash, atomically (complete or not at all)."""
    buffer = io.BytesIO()
    torch.save(seal(payload), buffer)
    write_atomic(Path(path), buffer.getvalue())


def frontend_entry(frontend: Frontend | None) -> dict:
    """{"frontend": the record as a model file holds it} ({} without a front end): statistics as a tensor."""
    if frontend is None:
        return {}
    record = frontend.record()
    if record["global_stats"] is not None:
        record["global_stats"] = torch.from_numpy(record["global_stats"])
    return {"frontend": record}


def save_model(path, model: BatchedCTCModel | ProgressiveCTCModel, tokens: TokenTable,
               info: dict | None = None, frontend: Frontend | None = None, bundle: dict | None = None,
               adaptation: dict | None = None) -> None:
    """Writes model (config and parameters), its token table, an info dict (str/number values), the front end
    of its training features and its adaptation plan (AdaptationPlan.record) to path; `bundle`
    (ModelFile.bundle) carries over another file's front end and decoding bundle."""
    payload = {"format": FORMAT, "config": dataclasses.asdict(model.config), "tokens": list(tokens.symbols),
               "params": _cpu(model.params), "info": dict(info or {}), **(bundle or {}), **frontend_entry(frontend),
               **({"adaptation": adaptation} if adaptation is not None else {})}
    if isinstance(model, ProgressiveCTCModel):
        payload["columns"] = [_cpu(column.params) for column in model.columns]
    write_model_file(path, payload)


def _checked(path, params, shapes: dict, what: str) -> dict:
    if not isinstance(params, dict):
        raise ModelFileError(f"{path}: the {what} parameters are missing")
    for name, shape in shapes.items():
        value = params.get(name)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else "missing"
            raise ModelFileError(f"{path}: {what} parameter {name} should be {shape}, found {found}")
    return params


def _filled(model, params: dict):
    with torch.no_grad():
        for name, p in model.params.items():
            p.copy_(params[name])
    return model


def load_model(path) -> tuple[BatchedCTCModel | ProgressiveCTCModel, TokenTable, dict]:
    """(model on the CPU in eval mode, token table, info) from a file written by save_model."""
    return model_from_payload(read_weights_only(path), path)


@dataclass
class ModelFile:
    """What any model file holds: the model (training, progressive or compact), its tokens and info, and where
    stored, its feature front end and its decoding bundle (metarecipe.decode.bundle reads that)."""

    path: str
    model: BatchedCTCModel | ProgressiveCTCModel | CompactCTCModel
    tokens: TokenTable
    info: dict
    frontend: Frontend | None
    decoding: dict | None
    adaptation: dict | None  # the stored adaptation plan (metarecipe.meta.plan.AdaptationPlan.stored reads it)

    @property
    def is_compact(self) -> bool:
        return isinstance(self.model, CompactCTCModel)

    def bundle(self) -> dict:
        """Its front end and decoding bundle as a model file stores them, for a file derived from this one."""
        return {**frontend_entry(self.frontend), **({"decoding": self.decoding} if self.decoding else {})}

    @property
    def num_mel_bins(self) -> int:
        config = self.model.config
        return config["num_mel_bins"] if self.is_compact else config.num_mel_bins


def write_bundled(source, out, frontend: Frontend, decoding: dict) -> None:
    """Writes `out`: the model file `source` (any kind) with this front end and decoding bundle
    (metarecipe.decode.bundle.decoding_record), sealed anew."""
    payload = {key: value for key, value in read_weights_only(source).items() if key != DIGEST_KEY}
    write_model_file(out, {**payload, **frontend_entry(frontend), "decoding": decoding})


def read_model_file(path, device: torch.device | str = "cpu") -> ModelFile:
    """Any model file: a training model (plain or progressive; on `device`, in eval mode) or a compact one (CPU
    only). ModelFileError naming the file when it is damaged or holds something else."""
    device = torch.device(device)
    payload = read_weights_only(path)
    if is_compact(payload):
        if device.type != "cpu":
            raise ModelFileError(f"{path}: compact models run on the CPU, not on {device}")
        model = compact_from_payload(payload, path)
        tokens, info = token_table(path, model.tokens), model.info
    else:
        model, tokens, info = model_from_payload(payload, path)
        model = model.to(device)
    try:
        frontend = Frontend.from_record(payload["frontend"], path) if "frontend" in payload else None
    except FrontendError as err:
        raise ModelFileError(str(err)) from None
    decoding, adaptation = payload.get("decoding"), payload.get("adaptation")
    for name, entry in (("decoding bundle", decoding), ("adaptation entry", adaptation)):
        if entry is not None and not isinstance(entry, dict):
            raise ModelFileError(f"{path}: its {name} is not a mapping")
    loaded = ModelFile(str(path), model, tokens, info, frontend, decoding, adaptation)
    if frontend is not None and frontend.fbank.num_mel_bins != loaded.num_mel_bins:
        raise ModelFileError(f"{path}: its front end makes {frontend.fbank.num_mel_bins} mel bins, its model reads "
                             f"{loaded.num_mel_bins}")
    return loaded


def token_table(path, symbols) -> TokenTable:
    """The token table stored in a model file, or ModelFileError naming path."""
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        raise ModelFileError(f"{path}: its token table is not a list of symbols")
    try:
        return TokenTable(symbols)
    except ValueError as err:
        raise ModelFileError(f"{path}: {err}") from err


def model_from_payload(payload, path) -> tuple[BatchedCTCModel | ProgressiveCTCModel, TokenTable, dict]:
    """load_model of a file's content already read (read_weights_only); errors name path (and the config key)."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a metarecipe model file (format {FORMAT} expected)")
    config = from_mapping(ModelConfig, payload.get("config"), f"{path}: config")
    tokens = token_table(path, payload.get("tokens"))
    if config.vocab_size != len(tokens):
        raise ModelFileError(f"{path}: {config.vocab_size} outputs but {len(tokens)} tokens")
    info = payload.get("info", {})
    if not isinstance(info, dict):
        raise ModelFileError(f"{path}: its info is not a mapping")
    shapes = parameter_shapes(config)
    if "columns" not in payload:
        model = _filled(BatchedCTCModel(config), _checked(path, payload.get("params"), shapes, "model"))
        return model.eval(), tokens, info
    if not isinstance(payload["columns"], list) or not payload["columns"]:
        raise ModelFileError(f"{path}: a progressive model file without source columns")
    columns = [_filled(BatchedCTCModel(config), _checked(path, c, shapes, f"source column {i}"))
               for i, c in enumerate(payload["columns"])]
    model = ProgressiveCTCModel(columns)
    own = _checked(path, payload.get("params"), shapes | lateral_shapes(config, len(columns)), "progressive")
    return _filled(model, own).eval(), tokens, info


def save_rates(path, rates: dict[str, torch.Tensor]) -> None:
    """Writes Meta-SGD's learned per-element rates (name -> tensor of the parameter's shape) as a sealed file."""
    write_model_file(path, {"format": RATES_FORMAT, "rates": _cpu(rates)})


def load_rates(path, model) -> dict[str, torch.Tensor]:
    """The rates save_rates wrote for `model` (one per parameter, of its shape), or ModelFileError naming path."""
    payload = read_weights_only(path, "Meta-SGD rates file")
    if payload.get("format") != RATES_FORMAT:
        raise ModelFileError(f"{path}: not a Meta-SGD rates file (format {RATES_FORMAT} expected)")
    shapes = {name: tuple(p.shape) for name, p in model.params.items()}
    return _checked(path, payload.get("rates"), shapes, "Meta-SGD rate of")
