"""Speed perturbation of a data directory, as Kaldi's perturb_data_dir_speed.sh does it.

Each factor f gives a copy of every utterance with ids `sp<f>-<utt>` and speakers `sp<f>-<spk>` (so that speakers
stay prefixes), durations divided by f, and a wav.scp entry that is a pipe command: this module run as a
program, reading the original entry and writing the audio played at f times the speed (tempo and pitch, by
resampling) as a WAV stream. Anything that reads wav.scp, compute-feats included, then works unchanged.

    python -m metarecipe.data.perturb 0.9 'path/or/command |' > out.wav
"""

from __future__ import annotations

import io
import shlex
import sys

import numpy as np
import soundfile
import soxr

from metarecipe.data.audio import read_audio
from metarecipe.data.datadir import DataDir, combine_data_dirs

SAMPLE_RATE = 16000


def perturb_samples(samples: np.ndarray, factor: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The samples played `factor` times as fast: length / factor, frequencies x factor."""
    return soxr.resample(samples, sample_rate * factor, sample_rate, quality="HQ").astype(np.float32)


def _label(factor: float) -> str:
    return f"sp{factor:g}"


def _command(data: DataDir, utt: str, factor: float) -> str:
    """A wav.scp pipe command giving utterance `utt` (cut from its recording, if segmented) at `factor` speed."""
    cut = f" {data.segments[utt].start} {data.segments[utt].end}" if data.segments else ""
    source = shlex.quote(data.wav_scp[data.recording_of(utt)])
    return f"{sys.executable} -m metarecipe.data.perturb {factor:g} {source}{cut} |"


def _copy(data: DataDir, factor: float, tag: str) -> DataDir:
    """Every utterance at `factor` speed as a recording of its own, ids and speakers prefixed with tag."""
    copy = DataDir({}, {}, {})
    for utt in data.utterances:
        new = f"{tag}-{utt}" if tag else utt
        copy.wav_scp[new] = _command(data, utt, factor)
        copy.text[new] = data.text[utt]
        copy.utt2spk[new] = f"{tag}-{data.utt2spk[utt]}" if tag else data.utt2spk[utt]
        if data.utt2dur:
            copy.utt2dur[new] = data.utt2dur[utt] / factor
        if data.utt2lang:
            copy.utt2lang[new] = data.utt2lang[utt]
    return copy


def speed_perturb(data: DataDir, factors=(0.9, 1.1), keep_original: bool = True) -> DataDir:
    """The directory with one speed-perturbed copy per factor (and the original when keep_original)."""
    copies = []
    if keep_original:  # segmented originals become single-recording entries too, so that all combine
        copies.append(_copy(data, 1.0, "") if data.segments else data)
    for factor in factors:
        if not 0.5 <= factor <= 2.0 or factor == 1.0:
            raise ValueError(f"speed factor must lie in [0.5, 2] and differ from 1, got {factor}")
        copies.append(_copy(data, factor, _label(factor)))
    return combine_data_dirs(copies)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 4):
        print("usage: python -m metarecipe.data.perturb FACTOR WAV_SCP_VALUE [START END] > out.wav", file=sys.stderr)
        return 2
    factor = float(args[0])
    start, end = (float(args[2]), float(args[3])) if len(args) == 4 else (0.0, -1.0)
    samples = read_audio(args[1], SAMPLE_RATE, start, end)
    if factor != 1.0:
        samples = perturb_samples(samples, factor)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    sys.stdout.buffer.write(buffer.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
