"""Cepstral mean and variance normalisation with Kaldi's statistics layout.

Statistics of a set of frames are a (2, D + 1) float64 matrix: row 0 the per-dimension sums and the frame
count, row 1 the sums of squares (Kaldi's compute-cmvn-stats), so they combine by addition and are stored in
cmvn.scp/ark beside the features, per speaker or for the whole set.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def compute_cmvn(features: Iterable[np.ndarray]) -> np.ndarray:
    """Accumulated statistics (2, D + 1) of feature matrices (T_i, D)."""
    stats = None
    for feats in features:
        feats = np.asarray(feats, dtype=np.float64)
        if stats is None:
            stats = np.zeros((2, feats.shape[1] + 1))
        stats[0, :-1] += feats.sum(axis=0)
        stats[0, -1] += feats.shape[0]
        stats[1, :-1] += (feats**2).sum(axis=0)
    if stats is None:
        raise ValueError("compute_cmvn: no features")
    return stats


def apply_cmvn(feats: np.ndarray, stats: np.ndarray, norm_vars: bool = True) -> np.ndarray:
    """(T, D) features with the mean (and, with norm_vars, the variance) of `stats` removed, as float32."""
    count = stats[0, -1]
    if count <= 0:
        raise ValueError("apply_cmvn: statistics of zero frames")
    mean = stats[0, :-1] / count
    out = feats - mean
    if norm_vars:
        var = np.maximum(stats[1, :-1] / count - mean**2, 1e-10)
        out = out / np.sqrt(var)
    return out.astype(np.float32)
