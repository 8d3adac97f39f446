"""The decoding bundle of a model file: how to decode with it, so that `transcribe MODEL audio` needs nothing else.

`metarecipe bundle` stores under the model file's "decoding" key:

    {"options": the BeamSearchOptions fields, "lm_unit": "word" | "token",
     "lm": None | {"name": file name, "sha256": of the ARPA file's bytes,
                   "gz": uint8 tensor, the gzipped ARPA file (embedded) | "path": where it lies (referenced)}}

An embedded LM travels inside the model file (whose own SHA-256 covers it); a referenced one is read from its
path and must still have the recorded SHA-256, so a changed or replaced LM is an error, never a silent change.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from metarecipe.config import ConfigError, from_mapping
from metarecipe.decode.lm_tables import lm_tables
from metarecipe.errors import InputError
from metarecipe.io.model_files import ModelFile
from metarecipe.kernels.beam_search import BeamSearchOptions, LMTables
from metarecipe.kernels.compact import ModelFileError
from metarecipe.text.arpa import ArpaError
from metarecipe.text.lm import NGramLM
from metarecipe.text.tokens import TokenTable

LM_UNITS = ("word", "token")
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Decoding:
    """Search options and the LM (None: no LM) a recognizer decodes with."""

    options: BeamSearchOptions
    lm: LMTables | None
    lm_unit: str
    lm_name: str | None  # where the LM came from, for logs and reports


def read_lm(path, tokens: TokenTable, unit: str) -> LMTables:
    """The decoder's tables of an ARPA file (.arpa or .arpa.gz) over the model's tokens; InputError naming the
    file when it is malformed or does not fit the tokens."""
    try:
        lm = NGramLM.read_arpa(path)
    except OSError as err:
        raise InputError(f"{path}: cannot read the LM ({err.strerror or err})") from None
    try:
        return lm_tables(lm, tokens, unit)
    except ValueError as err:  # an LM that does not fit the model's tokens
        raise InputError(f"{path}: {err}") from err


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decoding_record(options: BeamSearchOptions, lm_path=None, lm_unit: str = "word", embed: bool = True) -> dict:
    """The "decoding" entry of a model file (see the module docstring)."""
    if lm_unit not in LM_UNITS:
        raise ConfigError(f"lm_unit must be one of {LM_UNITS}, got {lm_unit!r}")
    record = {"options": dataclasses.asdict(options), "lm_unit": lm_unit, "lm": None}
    if lm_path is not None:
        path = Path(lm_path)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise InputError(f"{path}: cannot read the LM ({err.strerror or err})") from None
        record["lm"] = {"name": path.name, "sha256": _sha256(data)}
        if embed:
            packed = data if data[:2] == GZIP_MAGIC else gzip.compress(data, compresslevel=6, mtime=0)
            record["lm"]["gz"] = torch.frombuffer(bytearray(packed), dtype=torch.uint8)
            record["lm"]["file_gzipped"] = packed is data  # the SHA-256 is of the gzipped bytes then
        else:
            record["lm"]["path"] = str(path.resolve())
    return record


def _embedded_lm(entry: dict, tokens: TokenTable, unit: str, source: str) -> LMTables:
    """The LM stored in a model file, read through a temporary file (the ARPA reader reads files)."""
    packed = entry["gz"].numpy().tobytes()
    try:
        original = packed if entry.get("file_gzipped") else gzip.decompress(packed)
    except (OSError, EOFError) as err:
        raise ModelFileError(f"{source}: its embedded LM is not gzip data ({err})") from None
    if _sha256(original) != entry["sha256"]:
        raise ModelFileError(f"{source}: its embedded LM does not match the SHA-256 recorded for it")
    fd, name = tempfile.mkstemp(suffix=".arpa.gz")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(packed)
        return read_lm(name, tokens, unit)
    except ArpaError as err:
        raise ModelFileError(f"{source}: its embedded LM {entry.get('name')}: {err}") from None
    finally:
        os.unlink(name)


def _referenced_lm(entry: dict, tokens: TokenTable, unit: str, source: str) -> LMTables:
    path = Path(entry["path"])
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{source}: its LM {path} cannot be read ({err.strerror or err}); give the LM with --lm, "
                         "or bundle the model again") from None
    if _sha256(data) != entry["sha256"]:
        raise InputError(f"{source}: its LM {path} has changed since the model was bundled (SHA-256 differs); "
                         "give the LM with --lm, or bundle the model again")
    return read_lm(path, tokens, unit)


def model_decoding(loaded: ModelFile, lm_path=None, lm_unit: str | None = None,
                   options: BeamSearchOptions | None = None) -> Decoding:
    """How to decode with a model file: its bundle's options and LM, each replaced where given here (lm_path:
    another ARPA file; options: other search options). Without a bundle: the default options and no LM."""
    record = loaded.decoding or {}
    source = loaded.path
    try:
        stored = from_mapping(BeamSearchOptions, record["options"], f"{source}: decoding.options") \
            if "options" in record else BeamSearchOptions()
    except (ConfigError, ValueError) as err:
        raise ModelFileError(str(err)) from None
    unit = lm_unit or record.get("lm_unit", "word")
    if unit not in LM_UNITS:
        raise ModelFileError(f"{source}: decoding.lm_unit must be one of {LM_UNITS}, got {unit!r}")
    entry = record.get("lm")
    if lm_path is not None:
        lm, name = read_lm(lm_path, loaded.tokens, unit), str(lm_path)
    elif isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
        if isinstance(entry.get("gz"), torch.Tensor):
            lm, name = _embedded_lm(entry, loaded.tokens, unit, source), f"{entry.get('name')} (in {source})"
        elif isinstance(entry.get("path"), str):
            lm, name = _referenced_lm(entry, loaded.tokens, unit, source), entry["path"]
        else:
            raise ModelFileError(f"{source}: decoding.lm holds neither an embedded LM nor a path")
    elif entry is None:
        lm, name = None, None
    else:
        raise ModelFileError(f"{source}: decoding.lm is malformed")
    return Decoding(options or stored, lm, unit, name)
