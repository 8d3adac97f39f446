"""Audio input: mono float32 samples at the target rate from an audio file or from a wav.scp value.

Two kinds of source, kept apart:

- A file (`read_audio_file`, `file_duration`): wav, flac, mp3, ogg, anything libsndfile reads through
  soundfile. The path is only ever opened as a file; a '|' in it means nothing. Corpus plug-ins use these for
  every path that comes from corpus metadata (crowd-sourced TSVs, downloaded tarballs): a path from a corpus is
  a file name, never a command.
- A wav.scp value (`read_audio`, `duration`), with Kaldi's documented convention: a value ending in '|' is a
  shell command whose standard output is an audio stream, and it is run through the shell (e.g.
  `utt1 sox in.sph -t wav - |`). This is for commands a person writes into wav.scp by hand, and for the ones
  metarecipe writes itself (speed perturbation); it is the one place where metarecipe runs what it reads, so
  use it only on wav.scp files you prepared or trust. Any other value is a file, as above.

Resampling uses soxr (the SoX resampler, high quality).
"""

from __future__ import annotations

import io
import os
import subprocess

import numpy as np
import soundfile
import soxr

from metarecipe.errors import InputError

# libsndfile's SFE_BAD_FILE: with a file that exists (checked first), it means the decoder (mpg123 for mp3)
# found no audio in the bytes, yet its text says "File does not exist or is not a regular file".
_NOT_DECODABLE = 7


class AudioError(InputError, RuntimeError):
    """Audio that cannot be read; the message names the source and the reason."""


def is_command(spec: str) -> bool:
    """Whether a wav.scp value is a pipe command (it ends in '|', as in Kaldi)."""
    return spec.rstrip().endswith("|")


def decoding_error(name: str, err: soundfile.LibsndfileError) -> AudioError:
    reason = "corrupt or truncated: no audio frames found" if err.code == _NOT_DECODABLE else \
        err.error_string.rstrip(".")
    return AudioError(f"{name}: cannot decode audio ({reason})")


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
        raise decoding_error(name, err) from None
    return samples, rate


def _seconds(source, name: str) -> float:
    try:
        info = soundfile.info(source)
    except soundfile.LibsndfileError as err:
        raise decoding_error(name, err) from None
    return info.frames / info.samplerate


def require_file(path: str) -> None:
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


def _to_mono(samples: np.ndarray, rate: int, sample_rate: int, name: str, start: float, end: float) -> np.ndarray:
    if samples.shape[0] == 0:
        raise AudioError(f"{name}: no samples" + (f" in [{start}, {end}] s" if start or end >= 0 else ""))
    mono = samples.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    return mono


def read_audio_file(path: str | os.PathLike, sample_rate: int = 16000, start: float = 0.0,
                    end: float = -1.0) -> np.ndarray:
    """Mono samples (N,) float32 at `sample_rate` from an audio file (never a command), optionally cut to
    [start, end) seconds (end -1: to the end). Raises AudioError for missing, empty or corrupt files."""
    path = os.fspath(path)
    require_file(path)
    samples, rate = _decode(path, path, start, end)
    return _to_mono(samples, rate, sample_rate, path, start, end)


def file_duration(path: str | os.PathLike) -> float:
    """Seconds of audio in an audio file (never a command)."""
    path = os.fspath(path)
    require_file(path)
    return _seconds(path, path)


def read_audio(spec: str, sample_rate: int = 16000, start: float = 0.0, end: float = -1.0) -> np.ndarray:
    """Mono samples (N,) float32 at `sample_rate` from a wav.scp value (a file, or a command ending in '|',
    which is run), optionally cut to [start, end) seconds (end -1: to the end, as in Kaldi segments). Raises
    AudioError for missing, empty, corrupt or silent-command sources."""
    if not is_command(spec):
        return read_audio_file(spec, sample_rate, start, end)
    samples, rate = _decode(io.BytesIO(_run(spec)), spec, start, end)
    return _to_mono(samples, rate, sample_rate, spec, start, end)


def duration(spec: str) -> float:
    """Seconds of audio in a wav.scp value (a command is run and decoded in full)."""
    if not is_command(spec):
        return file_duration(spec)
    return _seconds(io.BytesIO(_run(spec)), spec)
