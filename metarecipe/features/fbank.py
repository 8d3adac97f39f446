"""Kaldi-compatible log-mel filterbank features (Kaldi's compute-fbank-feats).

kaldi-native-fbank computes them by default; torchaudio.compliance.kaldi.fbank gives the same features where
torchaudio imports (backend="torchaudio"). Samples are scaled to the int16 range first, as Kaldi reads audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT16_SCALE = 32768.0


@dataclass(frozen=True)
class FbankConfig:
    num_mel_bins: int = 80
    sample_rate: int = 16000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0  # 0: deterministic features


def _knf_fbank(samples: np.ndarray, config: FbankConfig) -> np.ndarray:
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = config.sample_rate
    opts.frame_opts.frame_length_ms = config.frame_length_ms
    opts.frame_opts.frame_shift_ms = config.frame_shift_ms
    opts.frame_opts.dither = config.dither
    opts.mel_opts.num_bins = config.num_mel_bins
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(config.sample_rate, samples * INT16_SCALE)
    fbank.input_finished()
    if fbank.num_frames_ready == 0:
        return np.zeros((0, config.num_mel_bins), dtype=np.float32)
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]).astype(np.float32)


def _torchaudio_fbank(samples: np.ndarray, config: FbankConfig) -> np.ndarray:
    import torch
    import torchaudio

    wave = torch.from_numpy(samples * INT16_SCALE).unsqueeze(0)
    feats = torchaudio.compliance.kaldi.fbank(
        wave, num_mel_bins=config.num_mel_bins, sample_frequency=config.sample_rate,
        frame_length=config.frame_length_ms, frame_shift=config.frame_shift_ms, dither=config.dither)
    return feats.numpy().astype(np.float32)


def compute_fbank(samples: np.ndarray, config: FbankConfig | None = None, backend: str = "knf") -> np.ndarray:
    """Log-mel filterbank (frames, num_mel_bins) float32 of mono samples (N,) in [-1, 1] at config.sample_rate.
    backend: "knf" (kaldi-native-fbank) or "torchaudio"."""
    config = config or FbankConfig()
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if backend == "knf":
        return _knf_fbank(samples, config)
    if backend == "torchaudio":
        return _torchaudio_fbank(samples, config)
    raise ValueError(f"fbank backend must be 'knf' or 'torchaudio', got {backend!r}")
