"""Tasks for meta-learning from data directories with features: pools, task samplers, support/query sets.

A task is a language by default, or any `utt2<key>` grouping (utt2spk: speakers, utt2accent: accents). Support
and query sets are drawn by seconds of speech, disjoint within a task, and padded into a TaskSet; for training
batches, with an Augmenter (`make_augmenter`), each utterance's features are augmented afresh
(metarecipe.features.augment), every draw from the batch's random generator.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch

from metarecipe.config import ConfigError
from metarecipe.data.audio import AudioError, is_command
from metarecipe.features.augment import AugmentConfig, Augmenter
from metarecipe.features.extract import FBANK_RECORD
from metarecipe.features.tables import FeatureError, split_location
from metarecipe.io.pools import Utterance, cmvn_stats, load_feats, load_mat
from metarecipe.meta.tasks import MetaBatch, TaskSet

STRATEGIES = ("uniform", "proportional", "temperature")


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
        batch.append((load_mat(utt.feats, f"utterance '{utt.utt}'"), cmvn_stats(utt.cmvn) if utt.cmvn else None,
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
