"""An audio file, standard input or an array as a stream of mono float32 blocks at a target rate, in bounded memory.

A file is opened with soundfile and read a block at a time by libsndfile (wav, flac, mp3, ogg: whatever it decodes,
at any rate and channel count), its channels averaged and its rate converted by a streaming soxr resampler of the
quality metarecipe.data.audio uses, so the concatenated blocks equal `read_audio_file` of the whole file up to float
rounding. A path is only ever a file name, never a command. Standard input ("-") is not seekable and mp3 decoding
seeks, so it is first copied to a temporary file, which is unlinked as soon as it is open (nothing is left behind).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator

import numpy as np
import soundfile
import soxr
from soundfile import _ffi, _snd

from metarecipe.data.audio import AudioError, decoding_error, require_file

STDIN = "-"
# Seconds of audio read and resampled at a time: long enough that the per-block overhead is negligible, short
# enough that a block stays small (8-channel 96 kHz audio: 12 MB) and the first speech reaches the recogniser early.
BLOCK_SECONDS = 4.0
# Standard input is copied to the temporary file this many bytes at a time.
_COPY_BYTES = 1 << 20


def resampled_blocks(blocks: Iterable[np.ndarray], rate: int, target_rate: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks (n,) at `target_rate` from float32 blocks (frames, channels) at `rate`: channels are
    averaged, the rate converted by one soxr stream (quality "HQ") that is flushed at the end; empty blocks are
    skipped."""
    stream = soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ") if rate != target_rate else None
    for block in blocks:
        mono = block.mean(axis=1)
        out = stream.resample_chunk(mono) if stream else mono
        if len(out):
            yield out
    if stream:
        tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield tail


def _block_frames(rate: int, block_seconds: float) -> int:
    return max(1, int(round(rate * block_seconds)))


def array_blocks(samples: np.ndarray, rate: int, target_rate: int = 16000,
                 block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Mono float32 blocks (n,) at `target_rate` from float samples in [-1, 1], shape (N,) or (N, channels) at
    `rate` Hz, converted `block_seconds` at a time (no blocks for N = 0). Raises ValueError for other arrays."""
    array = np.asarray(samples)
    if array.ndim not in (1, 2) or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"samples must be a float array (N,) or (N, channels), got {array.dtype} {array.shape}")
    frames = (array[:, None] if array.ndim == 1 else array).astype(np.float32, copy=False)
    step = _block_frames(rate, block_seconds)
    return resampled_blocks((frames[i:i + step] for i in range(0, len(frames), step)), rate, target_rate)


def _open(path: str, label: str) -> soundfile.SoundFile:
    try:
        return soundfile.SoundFile(path)
    except soundfile.LibsndfileError as err:
        raise decoding_error(label, err) from None


def _open_stdin() -> soundfile.SoundFile:
    """Standard input copied to a temporary file, opened; the file is unlinked before this returns."""
    copy = tempfile.NamedTemporaryFile(prefix="metarecipe-stdin-", delete=False)
    try:
        with copy:
            shutil.copyfileobj(sys.stdin.buffer, copy, _COPY_BYTES)
        if os.path.getsize(copy.name) == 0:
            raise AudioError("standard input: empty (no bytes)")
        return _open(copy.name, "standard input")
    finally:
        os.unlink(copy.name)


class AudioStream:
    """An audio file, or standard input for "-", as mono float32 blocks (n,) at `sample_rate` Hz, decoded
    `block_seconds` at a time. The source is opened (and checked) on construction; use it as a context manager or
    call close(). Each iteration reads from the start.

    name: the source as given ("-" for standard input); duration: its length in seconds (from the header, or from
    the copy of standard input). Raises AudioError naming the source when it is missing, undecodable or empty."""

    def __init__(self, source: str | os.PathLike, sample_rate: int = 16000, block_seconds: float = BLOCK_SECONDS):
        self.name = os.fspath(source)
        self.sample_rate = sample_rate
        self.block_seconds = block_seconds
        if self.name == STDIN:
            self._label = "standard input"
            self._file = _open_stdin()
        else:
            self._label = self.name
            require_file(self.name)
            self._file = _open(self.name, self.name)
        if self._file.frames == 0:
            self._file.close()
            raise AudioError(f"{self._label}: no samples")
        self.duration = self._file.frames / self._file.samplerate

    def __iter__(self) -> Iterator[np.ndarray]:
        self._file.seek(0)
        rate = self._file.samplerate
        return resampled_blocks(self._read(_block_frames(rate, self.block_seconds)), rate, self.sample_rate)

    def _read(self, frames: int) -> Iterator[np.ndarray]:
        """Blocks (<= frames, channels) float32 from the current position to the end.

        libsndfile is called directly: SoundFile.read seeks to the position it has just read up to after every
        call, and for MPEG audio libsndfile hands that seek to mpg123, which restarts decoding there without the
        bit reservoir of the frames before ("part2_3_length too large" on stderr, and wrong samples at every
        block boundary of low-rate mp3s, e.g. 22.05 kHz mono)."""
        handle = self._file._file
        while True:
            block = np.empty((frames, self._file.channels), np.float32)
            count = _snd.sf_readf_float(handle, _ffi.cast("float *", _ffi.from_buffer(block)), frames)
            code = _snd.sf_error(handle)
            if code:
                raise decoding_error(self._label, soundfile.LibsndfileError(code))
            if count <= 0:
                return
            yield block[:count]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
