"""The device a run asks for (`device: cpu | cuda | cuda:N | auto`), checked before any work starts."""

from __future__ import annotations

import os

import torch

from metarecipe.config import ConfigError


def resolve_device(spec: str, key: str = "device") -> torch.device:
    """torch.device for spec; "cuda" under torchrun is the process's own GPU (LOCAL_RANK). ConfigError when a GPU
    is asked for and none is there, naming the key and what torch sees."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key}: {spec!r} is not a device here (cpu, cuda, cuda:N or auto)")
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise ConfigError(f"{key}: {spec!r} needs a GPU but none is visible (torch {torch.__version__}, {built}); "
                          f"set {key}=cpu or run on a machine with a CUDA GPU")
    index = device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise ConfigError(f"{key}: GPU {index} requested but only {torch.cuda.device_count()} visible")
    return torch.device("cuda", index)
