"""The feature front end a model was trained with, stored in its model file so that raw audio can be decoded.

A front end is the fbank settings of the training features and their normalisation: "speaker" (Kaldi's
per-speaker CMVN, means and variances; at inference the statistics of the recording's speech stand in for
the speaker's) or "none". The statistics of the whole training set travel with it: they normalise a recording
too short for statistics of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from metarecipe.config import ConfigError, from_mapping
from metarecipe.errors import InputError
from metarecipe.features.cmvn import apply_cmvn
from metarecipe.features.fbank import FbankConfig, compute_fbank

CMVN_MODES = ("speaker", "none")
# Fewest speech frames (10 ms each) whose own statistics normalise a recording: 3 s. Below this the
# training set's statistics are used; a per-speaker mean over fewer frames follows the words, not the voice.
MIN_OWN_CMVN_FRAMES = 300


class FrontendError(InputError, ValueError):
    """A front-end record that cannot be used; the message names its source."""


@dataclass(frozen=True)
class Frontend:
    fbank: FbankConfig
    cmvn: str = "speaker"  # one of CMVN_MODES
    global_stats: np.ndarray | None = None  # (2, D + 1) float64 statistics of the training set (Kaldi layout)

    def features(self, samples: np.ndarray) -> np.ndarray:
        """(T, D) float32 fbank of mono samples (N,) at fbank.sample_rate, not normalised."""
        return compute_fbank(samples, self.fbank)

    def normalise(self, feats: np.ndarray, stats: np.ndarray | None) -> np.ndarray:
        """(T, D) features normalised as in training, with `stats` (2, D + 1) of the recording's speech; the
        training set's statistics stand in when those cover fewer than MIN_OWN_CMVN_FRAMES frames."""
        if self.cmvn == "none":
            return np.ascontiguousarray(feats, dtype=np.float32)
        if (stats is None or stats[0, -1] < MIN_OWN_CMVN_FRAMES) and self.global_stats is not None:
            stats = self.global_stats
        if stats is None or stats[0, -1] <= 0:
            return np.ascontiguousarray(feats, dtype=np.float32)
        return apply_cmvn(feats, stats)

    def record(self) -> dict:
        """The front end as model files store it (global statistics as a float64 array)."""
        return {"fbank": asdict(self.fbank), "cmvn": self.cmvn,
                "global_stats": None if self.global_stats is None else np.asarray(self.global_stats, np.float64)}

    @classmethod
    def from_record(cls, record, source) -> Frontend:
        """The front end of a stored record (see `record`; global_stats any array-like), or FrontendError naming
        `source`."""
        if not isinstance(record, dict):
            raise FrontendError(f"{source}: its front end is not a mapping")
        try:
            fbank = from_mapping(FbankConfig, record.get("fbank"), f"{source}: frontend.fbank")
        except ConfigError as err:
            raise FrontendError(str(err)) from None
        if record.get("cmvn") not in CMVN_MODES:
            raise FrontendError(f"{source}: frontend.cmvn must be one of {CMVN_MODES}, got {record.get('cmvn')!r}")
        stats = record.get("global_stats")
        if stats is not None:
            stats = np.asarray(stats, dtype=np.float64)
            if stats.shape != (2, fbank.num_mel_bins + 1):
                raise FrontendError(f"{source}: frontend.global_stats should be (2, {fbank.num_mel_bins + 1}), "
                                    f"found {stats.shape}")
        return cls(fbank, record["cmvn"], stats)
