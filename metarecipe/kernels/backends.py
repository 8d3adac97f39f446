"""Which kernel backends this install has, and the choice among them.

Backends, fastest first: ``cuda`` and ``cpp`` (the compiled extension ``metarecipe._C``), ``numba`` (CPU,
JIT-compiled), ``torch`` (plain torch ops: the reference the tests compare against, any device, any order of
derivatives). ``METARECIPE_NO_EXT=1`` in the environment ignores the compiled extension even when it is built.
"""

from __future__ import annotations

import importlib
import os
import warnings

import torch

BACKENDS = ("cuda", "cpp", "numba", "torch")
_warned: set[str] = set()


def _load_extension():
    """Returns (module or None, reason it is missing)."""
    if os.environ.get("METARECIPE_NO_EXT") == "1":
        return None, "METARECIPE_NO_EXT=1"
    try:
        return importlib.import_module("metarecipe._C"), ""
    except ImportError as err:
        return None, f"metarecipe._C did not import ({err})"


_C, _C_MISSING = _load_extension()


def _numba_available() -> bool:
    try:
        importlib.import_module("numba")
    except ImportError:
        return False
    return True


_NUMBA = _numba_available()


def extension():
    """The compiled module ``metarecipe._C``, or None."""
    return _C


def available_backends() -> list[str]:
    """Backends this install can run, fastest first."""
    found = []
    if _C is not None and _C.built_with_cuda() and torch.cuda.is_available():
        found.append("cuda")
    if _C is not None:
        found.append("cpp")
    if _NUMBA:
        found.append("numba")
    found.append("torch")
    return found


def _warn_once(kernel: str, chosen: str, reason: str) -> None:
    if kernel not in _warned:
        _warned.add(kernel)
        warnings.warn(f"metarecipe: {kernel} falls back to the {chosen} backend: {reason}", stacklevel=3)


def select_backend(kernel: str, device: torch.device, backend: str | None,
                   offered: tuple[str, ...] = BACKENDS) -> str:
    """Picks the backend for a kernel call on ``device`` among those the kernel ``offered``: the fastest there
    when ``backend`` is None, else the named one after checking that it exists and runs on that device."""
    here = [b for b in available_backends() if b in offered]
    if backend is None:
        if device.type == "cuda":
            if "cuda" in here:
                return "cuda"
            reason = (_C_MISSING or "metarecipe._C was built without CUDA") if "cuda" in offered else \
                f"{kernel} has no CUDA kernel"
            _warn_once(kernel, "torch", reason)
            return "torch"
        chosen = next(b for b in here if b != "cuda")
        if _C is None:
            _warn_once(kernel, chosen, _C_MISSING)
        return chosen
    if backend not in offered:
        raise ValueError(f"backend for {kernel} must be one of {offered} or None, got {backend!r}")
    if backend not in here:
        raise ValueError(f"backend {backend!r} is not available here (available: {available_backends()})")
    if backend == "cuda" and device.type != "cuda":
        raise ValueError("backend 'cuda' needs CUDA tensors; the inputs are on the CPU")
    if backend in ("cpp", "numba") and device.type == "cuda":
        raise ValueError(f"backend {backend!r} runs on the CPU; the inputs are on {device}")
    return backend
