"""Training checkpoints that survive crashes: atomic writes, a digest per checkpoint, the last K kept.

A checkpoint of step N is `ckpt-000000N.pt` (torch.save of a state of tensors, dicts, lists, strings and
numbers) plus `ckpt-000000N.json`, written after it, holding the .pt file's size and SHA-256. Both go through a
temp file, fsync and rename, and the directory is fsynced, so a kill at any moment leaves either a complete,
verified checkpoint or one that `latest()` recognises as incomplete and skips (with a report) for the one
before; temp files of a killed write are removed by the next save. Loading uses torch.load(weights_only=True):
a checkpoint can hold no code.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import warnings
from pathlib import Path

import torch

from metarecipe.io.atomic import write_atomic

PATTERN = re.compile(r"ckpt-(\d{8})\.pt$")


class CheckpointDir:
    """Checkpoints of one run in `directory`, the newest `keep` of them kept."""

    def __init__(self, directory, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def path(self, step: int) -> Path:
        return self.directory / f"ckpt-{step:08d}.pt"

    def steps(self) -> list[int]:
        """Steps with a checkpoint file, verified or not, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := PATTERN.match(p.name)))

    def save(self, step: int, state: dict) -> Path:
        """Writes the checkpoint of step (its marker last), then removes all but the newest `keep`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".ckpt-*.tmp"):  # left by a run killed while writing
            stale.unlink(missing_ok=True)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        path = self.path(step)
        write_atomic(path, data)
        marker = {"step": step, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        write_atomic(path.with_suffix(".json"), json.dumps(marker).encode())
        for old in self.steps()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)
            self.path(old).with_suffix(".json").unlink(missing_ok=True)
        return path

    def verify(self, step: int) -> str | None:
        """None when the checkpoint of step is complete, else why not."""
        path = self.path(step)
        try:
            marker = json.loads(path.with_suffix(".json").read_text())
        except FileNotFoundError:
            return "no marker (the run stopped while writing it)"
        except (OSError, ValueError) as err:
            return f"unreadable marker ({err})"
        data = path.read_bytes()
        if len(data) != marker.get("bytes") or hashlib.sha256(data).hexdigest() != marker.get("sha256"):
            return f"{len(data)} bytes whose SHA-256 differs from the marker's ({marker.get('bytes')} bytes)"
        return None

    def load(self, step: int) -> dict:
        problem = self.verify(step)
        if problem:
            raise ValueError(f"{self.path(step)}: corrupt checkpoint: {problem}")
        try:
            return torch.load(self.path(step), map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
            raise ValueError(f"{self.path(step)}: corrupt checkpoint: {err}") from err

    def latest(self) -> tuple[int, dict] | None:
        """(step, state) of the newest complete checkpoint, or None; incomplete newer ones are reported."""
        for step in reversed(self.steps()):
            try:
                return step, self.load(step)
            except ValueError as err:
                warnings.warn(f"{err}; trying the one before", stacklevel=2)
        return None
