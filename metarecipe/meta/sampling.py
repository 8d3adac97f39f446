"""Tasks for meta-learning from data directories with features: pools, task samplers, support/query sets.

A task is a language by default, or any `utt2<key>` grouping (utt2spk: speakers, utt2accent: accents). Support
and query sets are drawn by seconds of speech, disjoint within a task, and padded into a TaskSet; for training
batches, with an Augmenter (`make_augmenter`), each utterance's features are augmented afresh
(metarecipe.features.augment), every draw from the batch's random generator.
"""

from __future__ import annotations

import functools
import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np
import torch

from metarecipe.config import ConfigError
from metarecipe.data.audio import AudioError, is_command
from metarecipe.data.datadir import SKIPPED_FEATURES, DataDir, DataDirError, read_data_dir, read_key_values
from metarecipe.features.augment import AudioSource, AugmentConfig, Augmenter
from metarecipe.features.cmvn import apply_cmvn
from metarecipe.features.extract import FBANK_RECORD, read_fbank_record
from metarecipe.features.fbank import FbankConfig
from metarecipe.features.tables import FeatureError, read_feature_tables, split_location
from metarecipe.meta.tasks import MetaBatch, TaskSet
from metarecipe.text.tokens import TokenTable

STRATEGIES = ("uniform", "proportional", "temperature")
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
    tasks = read_key_values(path)
    lacking = [u for u in data.utterances if u not in tasks]
    if lacking:
        raise DataDirError(f"{path}: lacks {len(lacking)} utterance(s) of the data directory, e.g. '{lacking[0]}'")
    return tasks


def check_task_seconds(pools: dict[str, list[Utterance]], support_seconds: float, query_seconds: float) -> None:
    """ConfigError naming the first task that cannot always give disjoint support and query sets of these
    seconds: what is left after the support set must hold the query set, whichever utterance the support set
    takes last (so draw_meta_batch never runs out)."""
    if not (support_seconds > 0 and query_seconds > 0):
        raise ConfigError(f"support_seconds and query_seconds must be positive, got {support_seconds:g} and "
                          f"{query_seconds:g}")
    for task, pool in sorted(pools.items()):
        total, longest = sum(u.seconds for u in pool), max(u.seconds for u in pool)
        if total - longest < support_seconds or total < support_seconds + query_seconds:
            raise ConfigError(f"task '{task}' has {total:.2f} s of speech in {len(pool)} utterance(s), the longest "
                              f"{longest:.2f} s: too little for disjoint support and query sets of "
                              f"{support_seconds:g} s and {query_seconds:g} s (support_seconds, query_seconds)")


class TaskSampler:
    """Chooses tasks: uniform, proportional to their seconds of speech, or with temperature T
    (p ~ size^(1/T): T = 1 proportional, T -> inf uniform)."""

    def __init__(self, pools: dict[str, list[Utterance]], strategy: str = "uniform", temperature: float = 2.0):
        if strategy not in STRATEGIES:
            raise ValueError(f"task sampling strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.names = sorted(pools)
        sizes = np.array([sum(u.frames for u in pools[n]) for n in self.names], dtype=np.float64)
        power = {"uniform": 0.0, "proportional": 1.0, "temperature": 1.0 / temperature}[strategy]
        weights = sizes**power
        self.probabilities = weights / weights.sum()

    def sample(self, num_tasks: int, rng: np.random.Generator) -> list[str]:
        """num_tasks distinct tasks (with repetition only when there are fewer tasks than asked)."""
        replace = num_tasks > len(self.names)
        return list(rng.choice(self.names, size=num_tasks, replace=replace, p=self.probabilities))


def draw_seconds(pool: list[Utterance], seconds: float, rng: np.random.Generator,
                 exclude=frozenset()) -> list[Utterance]:
    """Random utterances of the pool, not in `exclude`, until `seconds` of speech are reached."""
    chosen, total = [], 0.0
    for index in rng.permutation(len(pool)):
        utt = pool[index]
        if utt.utt in exclude:
            continue
        chosen.append(utt)
        total += utt.seconds
        if total >= seconds:
            break
    return chosen


def _load_mat(location: str, what: str) -> np.ndarray:
    """kaldiio.load_mat, with a failure as a FeatureError naming `what` and the location."""
    try:
        return kaldiio.load_mat(location)
    except (AssertionError, ValueError, OSError, struct.error) as err:
        raise FeatureError(f"{what}: cannot read the matrix at {location} ({type(err).__name__}: {err}); re-run "
                           "`metarecipe compute-feats` on its data directory") from err


@functools.lru_cache(maxsize=4096)
def _cmvn_stats(location: str) -> np.ndarray:
    return _load_mat(location, "cmvn statistics")


def load_feats(utt: Utterance) -> torch.Tensor:
    """(T, D) features of an utterance, normalised with its speaker's CMVN statistics where it has them."""
    mat = _load_mat(utt.feats, f"utterance '{utt.utt}'")
    return torch.from_numpy(apply_cmvn(mat, _cmvn_stats(utt.cmvn)) if utt.cmvn else mat.copy())


def draw_meta_batch(pools: dict[str, list[Utterance]], tasks: list[str], support_seconds: float,
                    query_seconds: float, rng: np.random.Generator, augment: Augmenter | None = None) -> MetaBatch:
    """Support and query sets of the named tasks, disjoint within each task, by seconds of speech (a task too
    small for them is a ConfigError: see check_task_seconds), augmented by `augment` when given (after every
    utterance is chosen, so the choice does not depend on it)."""
    check_task_seconds({t: pools[t] for t in tasks}, support_seconds, query_seconds)
    support, query = [], []
    for task in tasks:
        support.append(draw_seconds(pools[task], support_seconds, rng))
        query.append(draw_seconds(pools[task], query_seconds, rng, exclude={u.utt for u in support[-1]}))
    return MetaBatch(collate(support, augment=augment, rng=rng), collate(query, augment=augment, rng=rng))


def _missing_record(utt: Utterance) -> FeatureError:
    record = split_location(utt.feats)[0].parent / FBANK_RECORD
    return FeatureError(f"{record}: missing: augmenting utterance '{utt.utt}' on the waveform needs the fbank "
                        "settings of its features, which compute-feats records there; re-run `metarecipe "
                        "compute-feats` on its data directory (finished jobs are reused), or switch waveform "
                        "augmentation off (augment.speed_factors=[1.0], no noise, babble or reverb)")


def make_augmenter(config: AugmentConfig, utterances: Iterable[Utterance]) -> Augmenter | None:
    """The Augmenter of a run over `utterances` (None when config.enabled is false), after checking that each has
    what waveform augmentation needs: the fbank settings of its features (FeatureError naming the missing
    fbank.json) and its audio file (AudioError naming it); a missing noise directory is a ConfigError."""
    if not config.enabled:
        return None
    augment = Augmenter(config)
    if augment.needs_audio:
        files = set()
        for utt in utterances:
            if utt.source is None:
                raise _missing_record(utt)
            if not is_command(utt.source.spec) and utt.source.spec not in files:
                if not os.path.isfile(utt.source.spec):
                    raise AudioError(f"{utt.source.spec}: no such file (the audio of utterance '{utt.utt}', "
                                     "which augmentation reads)")
                files.add(utt.source.spec)
    return augment


def _augmented_feats(chosen: list[list[Utterance]], augment: Augmenter,
                     rng: np.random.Generator) -> list[list[torch.Tensor]]:
    """Augmented features of every utterance, in order; each may take the others as babble."""
    batch = []
    for utt in (u for task in chosen for u in task):
        if utt.source is None and augment.needs_audio:
            raise _missing_record(utt)
        batch.append((_load_mat(utt.feats, f"utterance '{utt.utt}'"), _cmvn_stats(utt.cmvn) if utt.cmvn else None,
                      utt.source))
    mats = iter(augment.batch_features(batch, rng))
    return [[torch.from_numpy(next(mats)) for _ in task] for task in chosen]


def collate(task_utts: list[list[Utterance]], utts_per_task: int | None = None, augment: Augmenter | None = None,
            rng: np.random.Generator | None = None) -> TaskSet:
    """Pads N tasks' utterances into a TaskSet (every task cut to the same utterance count); with an active
    `augment`, their features are augmented with draws from `rng`."""
    count = utts_per_task or min(len(u) for u in task_utts)
    chosen = [u[:count] for u in task_utts]
    if augment is not None and augment.active:
        if rng is None:
            raise ValueError("collate: augmentation draws from a random generator: give rng")
        mats = _augmented_feats(chosen, augment, rng)
    else:
        mats = [[load_feats(u) for u in task] for task in chosen]
    frames = max(m.shape[0] for row in mats for m in row)
    dims = mats[0][0].shape[1]
    labels = max(1, max(len(u.targets) for task in chosen for u in task))
    n = len(chosen)
    feats = torch.zeros(n, count, frames, dims)
    lengths = torch.zeros(n, count, dtype=torch.long)
    targets = torch.ones(n, count, labels, dtype=torch.long)
    target_lengths = torch.zeros(n, count, dtype=torch.long)
    for i, task in enumerate(chosen):
        for j, utt in enumerate(task):
            mat = mats[i][j]
            feats[i, j, : mat.shape[0]] = mat
            lengths[i, j] = mat.shape[0]
            targets[i, j, : len(utt.targets)] = torch.tensor(utt.targets, dtype=torch.long)
            target_lengths[i, j] = len(utt.targets)
    return TaskSet(feats, lengths, targets, target_lengths)
