"""Utterance pools: the utterances of data directories with features, checked, grouped into tasks, and their
normalised features. Training (metarecipe.meta), decoding and compression all read data through here.

Each utterance carries its feature location, its speaker's CMVN statistics, its token targets and its audio
with the fbank settings of its features (for waveform augmentation), so that nothing downstream re-reads the
data directory. `frontend_of` gives the feature front end of a pool, which model files store.
"""

from __future__ import annotations

import functools
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np
import torch

from metarecipe.config import ConfigError
from metarecipe.data.datadir import SKIPPED_FEATURES, DataDir, DataDirError, read_data_dir
from metarecipe.features.augment import AudioSource
from metarecipe.features.cmvn import apply_cmvn
from metarecipe.features.extract import read_fbank_record
from metarecipe.features.fbank import FbankConfig
from metarecipe.features.frontend import Frontend
from metarecipe.features.tables import FeatureError, read_feature_tables, split_location
from metarecipe.io.kaldi_tables import read_table
from metarecipe.text.tokens import TokenTable

FRAME_SHIFT = 0.01  # seconds per feature frame
SINGLE_POOL = "all"  # the name of the one pool of load_pools(..., group_by=None)


@dataclass
class Utterance:
    utt: str
    feats: str  # feats.scp value (ark path:offset)
    frames: int
    targets: list[int]
    cmvn: str | None = None  # cmvn.scp value of the utterance's speaker: statistics to normalise with
    source: AudioSource | None = None  # its audio and fbank settings (augmentation); None without fbank.json

    @property
    def seconds(self) -> float:
        return self.frames * FRAME_SHIFT


def load_pools(data_dirs, tokens: TokenTable, group_by: str | None = "lang") -> dict[str, list[Utterance]]:
    """Utterances of every task, from data directories with features. group_by: "lang" (utt2lang), "spk"
    (utt2spk), another key with a utt2<key> file, or None for one pool, named "all", of every utterance.

    Every directory and its feature tables are checked before anything is returned (read_feature_tables: a
    missing, truncated or inconsistent table or ark is a FeatureError naming it); utterances that compute-feats
    listed in feats_skipped.tsv are left out with one warning line on stderr. Each utterance carries its audio
    and the fbank settings of its features (compute-feats' fbank.json in the feature directory), which
    augmentation needs; `source` is None where they are not recorded (features of an earlier version)."""
    pools: dict[str, list[Utterance]] = {}
    dims: dict[Path, int] = {}
    records: dict[Path, FbankConfig | None] = {}  # feature directory -> the settings of its features
    for data_dir in map(Path, data_dirs):
        data = read_data_dir(data_dir)
        tables = read_feature_tables(data_dir, data)
        tasks = task_of_utterance(data_dir, data, group_by)
        dims[data_dir] = tables.dim
        left_out = [u for u in data.utterances if u in tables.skipped]
        if left_out:
            print(f"metarecipe: warning: {data_dir}: {len(left_out)} utterance(s) without features left out "
                  f"(listed in {data_dir / SKIPPED_FEATURES})", file=sys.stderr)
        for utt in data.utterances:
            if utt in tables.feats:
                feat_dir = split_location(tables.feats[utt])[0].parent
                if feat_dir not in records:
                    records[feat_dir] = read_fbank_record(feat_dir)
                pools.setdefault(tasks[utt], []).append(Utterance(utt, tables.feats[utt], tables.frames[utt],
                                                                  tokens.encode(data.text[utt]),
                                                                  tables.cmvn.get(data.utt2spk[utt]),
                                                                  audio_source(data, utt, records[feat_dir])))
    if len(set(dims.values())) > 1:
        raise FeatureError("features of different dimensions: " + ", ".join(f"{d}: {n}" for d, n in dims.items()))
    return pools


def audio_source(data: DataDir, utt: str, fbank: FbankConfig | None) -> AudioSource | None:
    """The audio of an utterance (its recording's wav.scp value and segment span) with the fbank settings of its
    features, or None when they are not recorded."""
    if fbank is None:
        return None
    segment = data.segments.get(utt)
    return AudioSource(data.wav_scp[data.recording_of(utt)], segment.start if segment else 0.0,
                       segment.end if segment else -1.0, fbank)


def task_of_utterance(data_dir: Path, data: DataDir, group_by: str | None) -> dict[str, str]:
    """{utterance: task} of a data directory grouped by `group_by` (see load_pools), or DataDirError naming the
    table that is missing or lacks an utterance."""
    if group_by is None:
        return dict.fromkeys(data.utterances, SINGLE_POOL)
    if group_by == "spk":
        return data.utt2spk
    if group_by == "lang":
        if not data.utt2lang:
            raise DataDirError(f"{data_dir / 'utt2lang'}: missing; tasks by language need each utterance's "
                               f"language: import the directory with `metarecipe prepare-data kaldi {data_dir} "
                               "OUT_DIR --opt lang=xx` and compute-feats on the new one, or group tasks by speaker "
                               "(data.group_by: spk)")
        return data.utt2lang
    path = data_dir / f"utt2{group_by}"
    if not path.exists():
        raise DataDirError(f"{path}: missing; tasks grouped by '{group_by}' need it (`utterance {group_by}` lines)")
    tasks = read_table(path)
    lacking = [u for u in data.utterances if u not in tasks]
    if lacking:
        raise DataDirError(f"{path}: lacks {len(lacking)} utterance(s) of the data directory, e.g. '{lacking[0]}'")
    return tasks


def load_mat(location: str, what: str) -> np.ndarray:
    """kaldiio.load_mat, with a failure as a FeatureError naming `what` and the location."""
    try:
        return kaldiio.load_mat(location)
    except (AssertionError, ValueError, OSError, struct.error) as err:
        raise FeatureError(f"{what}: cannot read the matrix at {location} ({type(err).__name__}: {err}); re-run "
                           "`metarecipe compute-feats` on its data directory") from err


@functools.lru_cache(maxsize=4096)
def cmvn_stats(location: str) -> np.ndarray:
    return load_mat(location, "cmvn statistics")


def load_feats(utt: Utterance) -> torch.Tensor:
    """(T, D) features of an utterance, normalised with its speaker's CMVN statistics where it has them."""
    mat = load_mat(utt.feats, f"utterance '{utt.utt}'")
    return torch.from_numpy(apply_cmvn(mat, cmvn_stats(utt.cmvn)) if utt.cmvn else mat.copy())


def pad_features(utts: list[Utterance]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised features of utterances padded with zeros: (B, T_max, F) and their lengths (B,)."""
    mats = [load_feats(u) for u in utts]
    lengths = torch.tensor([m.shape[0] for m in mats], dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence(mats, batch_first=True), lengths


def check_feature_dim(pools: dict[str, list[Utterance]], num_mel_bins: int, key: str) -> None:
    """ConfigError (naming `key`) when the features of the pools do not have num_mel_bins dimensions, the model's
    input size."""
    first = next((u for utts in pools.values() for u in utts), None)
    dims = load_feats(first).shape[1] if first is not None else num_mel_bins
    if dims != num_mel_bins:
        raise ConfigError(f"{key}: the model takes {num_mel_bins} feature dimensions, but utterance {first.utt} "
                          f"has {dims} ({first.feats})")


def frontend_of(utts: list[Utterance]) -> Frontend | None:
    """The feature front end of a pool: the fbank settings its features were made with, per-speaker CMVN (with
    the statistics of all its speakers summed) where its utterances have statistics; None when compute-feats
    recorded no fbank settings (features of an earlier version) or the pool mixes settings."""
    settings = {u.source.fbank if u.source is not None else None for u in utts}
    if len(settings) != 1 or None in settings:
        return None
    fbank = settings.pop()
    locations = {u.cmvn for u in utts}
    if None in locations:
        return Frontend(fbank, "none", None)
    return Frontend(fbank, "speaker", sum(cmvn_stats(location) for location in sorted(locations)))
