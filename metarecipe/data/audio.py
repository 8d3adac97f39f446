"""Audio input for data directories: one wav.scp value in, mono float32 samples at the target rate out.

A wav.scp value is a file path (wav, flac, mp3, ogg: anything libsndfile reads, through soundfile) or, as in
Kaldi, a shell command ending in '|' whose standard output is an audio stream. The command is run: that is
the one place where metarecipe executes what it reads, and only for wav.scp files you prepared or trust.
Resampling uses soxr (the SoX resampler, high quality).
"""

from __future__ import annotations

import io
import os
import subprocess

import numpy as np
import soundfile
import soxr


class AudioError(RuntimeError):
    """Audio that cannot be read; the message names the source and the reason."""


def is_command(spec: str) -> bool:
    return spec.rstrip().endswith("|")


def _decode(source, name: str, start: float, end: float) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 and the rate, from a path or a file object, cut to [start, end) seconds."""
    try:
        with soundfile.SoundFile(source) as f:
            rate = f.samplerate
            first = int(round(start * rate))
            if first:
                f.seek(min(first, f.frames))
            count = -1 if end < 0 else max(0, int(round(end * rate)) - first)
            samples = f.read(count, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as err:
        raise AudioError(f"{name}: cannot decode audio ({err})") from None
    return samples, rate


def _require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise AudioError(f"{path}: no such file")


def _run(command: str) -> bytes:
    result = subprocess.run(command.rstrip()[:-1], shell=True, capture_output=True)
    if result.returncode != 0:
        tail = result.stderr.decode("utf-8", "replace").strip()[-300:]
        raise AudioError(f"command '{command}' exited with status {result.returncode}: {tail}")
    if not result.stdout:
        raise AudioError(f"command '{command}' wrote no audio")
    return result.stdout


def read_audio(spec: str, sample_rate: int = 16000, start: float = 0.0, end: float = -1.0) -> np.ndarray:
    """Mono samples (N,) float32 at `sample_rate` from a wav.scp value, optionally cut to [start, end)
    seconds (end -1: to the end, as in Kaldi segments). Raises AudioError for missing, empty, corrupt or
    silent-command sources."""
    if is_command(spec):
        samples, rate = _decode(io.BytesIO(_run(spec)), spec, start, end)
    else:
        _require_file(spec)
        samples, rate = _decode(spec, spec, start, end)
    if samples.shape[0] == 0:
        raise AudioError(f"{spec}: no samples" + (f" in [{start}, {end}] s" if start or end >= 0 else ""))
    mono = samples.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    return mono


def duration(spec: str) -> float:
    """Seconds of audio in a wav.scp value (a command is run and decoded in full)."""
    if is_command(spec):
        data = io.BytesIO(_run(spec))
    else:
        _require_file(spec)
        data = spec
    try:
        info = soundfile.info(data)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{spec}: cannot decode audio ({err})") from None
    return info.frames / info.samplerate
