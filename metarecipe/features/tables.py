"""The feature tables of a data directory, checked against it and against the ark files before use.

compute-feats writes feats.scp, utt2num_frames and cmvn.scp into a data directory over the utterances whose
audio gave features and lists each other utterance with its reason in feats_skipped.tsv (`utt<TAB>reason`);
it never touches the source tables. read_data_dir checks that the tables' keys agree with the data directory;
`read_feature_tables` then checks that every entry points to a whole Kaldi binary matrix of the stated shape:
one header read per entry, so a truncated or overwritten ark is found before any work starts.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from metarecipe.data.datadir import SKIPPED_FEATURES, DataDir
from metarecipe.errors import InputError
from metarecipe.io.kaldi_tables import read_table

_LOCATION = re.compile(r"(.+):(\d+)")
# bytes of one value after a float header; compressed types: (bytes per value, bytes per column) after theirs
_FLOAT_TYPES = {b"FM ": 4, b"DM ": 8}
_COMPRESSED_TYPES = {b"CM ": (1, 8), b"CM2 ": (2, 0), b"CM3 ": (1, 0)}


class FeatureError(InputError, ValueError):
    """Feature tables or ark files that cannot be used; the message names the file, the utterance and the
    reason."""


@dataclass
class FeatureTables:
    """The feature tables of a data directory, restricted to the utterances that have features."""

    feats: dict[str, str]  # utterance -> feats.scp value (ark path:offset)
    frames: dict[str, int]  # utterance -> rows of its matrix
    cmvn: dict[str, str]  # speaker -> cmvn.scp value; empty without cmvn.scp
    skipped: dict[str, str]  # utterance -> reason, from feats_skipped.tsv
    dim: int  # feature dimension, the same for every utterance


def read_feature_tables(data_dir: Path, data: DataDir) -> FeatureTables:
    """The feature tables of `data`, a directory read and validated by read_data_dir (which checked that feats.scp
    and utt2num_frames hold exactly the utterances feats_skipped.tsv does not list, and cmvn.scp their speakers),
    or FeatureError naming the file, utterance and reason: a table is missing, a matrix is not whole or its rows
    differ from utt2num_frames, the features are not of one dimension, or CMVN statistics do not fit them."""
    for needed in ("feats.scp", "utt2num_frames"):
        if not (data_dir / needed).exists():
            raise FeatureError(f"{data_dir / needed}: missing; run `metarecipe compute-feats {data_dir}`")
    skipped_path = data_dir / SKIPPED_FEATURES
    skipped = read_table(skipped_path) if skipped_path.exists() else {}
    feats = read_table(data_dir / "feats.scp")
    frames = {utt: int(n) for utt, n in read_table(data_dir / "utt2num_frames").items()}
    rerun = f"re-run `metarecipe compute-feats {data_dir}`"
    dims = set()
    for utt, (rows, cols) in matrix_shapes(data_dir / "feats.scp", feats, rerun).items():
        if rows != frames[utt]:
            raise FeatureError(f"{data_dir / 'feats.scp'}: utterance '{utt}' has {rows} frames, utt2num_frames "
                               f"says {frames[utt]}; {rerun}")
        dims.add(cols)
    if len(dims) > 1:
        raise FeatureError(f"{data_dir / 'feats.scp'}: features of {len(dims)} dimensions {sorted(dims)}; {rerun}")
    dim = dims.pop()
    cmvn_path = data_dir / "cmvn.scp"
    cmvn = read_table(cmvn_path) if cmvn_path.exists() else {}
    for speaker, shape in matrix_shapes(cmvn_path, cmvn, rerun).items():
        if shape != (2, dim + 1):
            raise FeatureError(f"{cmvn_path}: speaker '{speaker}' has statistics of shape {shape}, features of "
                               f"dimension {dim} need (2, {dim + 1}); {rerun}")
    return FeatureTables(feats, frames, cmvn, skipped, dim)


def split_location(value: str) -> tuple[Path, int]:
    """(file, byte offset) of an scp value `path:offset` or `path` (offset 0)."""
    match = _LOCATION.fullmatch(value)
    return (Path(match[1]), int(match[2])) if match else (Path(value), 0)


def matrix_shapes(table: Path, entries: dict[str, str], advice: str) -> dict[str, tuple[int, int]]:
    """(rows, cols) of the Kaldi binary matrix behind every scp value, read from its header only; a matrix that
    is missing, not a binary matrix or does not fit in its file is a FeatureError naming the table, the key, the
    file and the reason, followed by `advice`."""
    by_file: dict[Path, list[tuple[str, int]]] = {}
    for key, value in entries.items():
        if value.endswith("|"):
            raise FeatureError(f"{table}: '{key}' is a command ('{value}'); features must be in files")
        path, offset = split_location(value)
        by_file.setdefault(path, []).append((key, offset))
    shapes = {}
    for path, keys in by_file.items():
        try:
            with open(path, "rb") as f:
                size = path.stat().st_size
                for key, offset in keys:
                    try:
                        shapes[key] = _matrix_shape(f, offset, size)
                    except ValueError as err:
                        raise FeatureError(f"{table}: '{key}': {path}: {err}; {advice}") from None
        except OSError as err:
            raise FeatureError(f"{table}: '{keys[0][0]}': {path}: {err.strerror}; {advice}") from err
    return shapes


def _matrix_shape(f, offset: int, size: int) -> tuple[int, int]:
    """(rows, cols) of the matrix at `offset` of an open file of `size` bytes, or ValueError saying why not."""
    f.seek(offset)
    head = f.read(24)
    kind = next((k for k in (*_FLOAT_TYPES, *_COMPRESSED_TYPES) if head[2:].startswith(k)), None)
    if not head.startswith(b"\0B") or kind is None:
        if offset >= size:
            raise ValueError(f"offset {offset} is past the end of the file ({size} bytes; truncated?)")
        raise ValueError(f"no Kaldi binary matrix at byte {offset}")
    start = offset + 2 + len(kind)
    fields = head[2 + len(kind):]
    if kind in _FLOAT_TYPES:
        if len(fields) < 10 or fields[0] != 4 or fields[5] != 4:
            raise ValueError(f"the matrix header at byte {offset} is cut short or damaged (truncated?)")
        rows, cols = struct.unpack("<i", fields[1:5])[0], struct.unpack("<i", fields[6:10])[0]
        end = start + 10 + rows * cols * _FLOAT_TYPES[kind]
    else:
        if len(fields) < 16:
            raise ValueError(f"the matrix header at byte {offset} is cut short (truncated?)")
        rows, cols = struct.unpack("<ii", fields[8:16])
        per_value, per_column = _COMPRESSED_TYPES[kind]
        end = start + 16 + cols * per_column + rows * cols * per_value
    if rows < 0 or cols <= 0:
        raise ValueError(f"the matrix at byte {offset} claims {rows} x {cols} values (damaged)")
    if end > size:
        raise ValueError(f"the {rows} x {cols} matrix at byte {offset} ends at byte {end}, the file after {size} "
                         "(truncated)")
    return rows, cols
