"""SpecAugment (Park et al. 2019): frequency and time masks on a feature matrix, for training batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpecAugmentConfig:
    freq_masks: int = 2
    max_freq_width: int = 27
    time_masks: int = 2
    max_time_ratio: float = 0.05  # a time mask covers at most this share of the frames


def spec_augment(feats: np.ndarray, rng: np.random.Generator, config: SpecAugmentConfig | None = None,
                 fill: float | None = None) -> np.ndarray:
    """A copy of feats (T, D) with random bands of channels and spans of frames set to `fill` (default: the
    matrix mean, which is 0 after CMVN)."""
    config = config or SpecAugmentConfig()
    out = np.array(feats, copy=True)
    frames, dims = out.shape
    value = float(out.mean()) if fill is None else fill
    for _ in range(config.freq_masks):
        width = int(rng.integers(0, min(config.max_freq_width, dims) + 1))
        start = int(rng.integers(0, dims - width + 1))
        out[:, start:start + width] = value
    max_width = int(config.max_time_ratio * frames)
    for _ in range(config.time_masks):
        width = int(rng.integers(0, max_width + 1))
        start = int(rng.integers(0, frames - width + 1))
        out[start:start + width] = value
    return out
