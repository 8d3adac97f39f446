"""Tasks for meta-learning from data directories with features: pools, task samplers, support/query sets.

A task is a language by default, or any `utt2<key>` grouping (utt2spk: speakers, utt2accent: accents). Support
and query sets are drawn by seconds of speech, disjoint within a task, and padded into a TaskSet.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np
import torch

from metarecipe.data.datadir import read_data_dir, read_key_values
from metarecipe.features.cmvn import apply_cmvn
from metarecipe.meta.tasks import MetaBatch, TaskSet
from metarecipe.text.tokens import TokenTable

STRATEGIES = ("uniform", "proportional", "temperature")
FRAME_SHIFT = 0.01  # seconds per feature frame


@dataclass
class Utterance:
    utt: str
    feats: str  # feats.scp value (ark path:offset)
    frames: int
    targets: list[int]
    cmvn: str | None = None  # cmvn.scp value of the utterance's speaker: statistics to normalise with

    @property
    def seconds(self) -> float:
        return self.frames * FRAME_SHIFT


def load_pools(data_dirs, tokens: TokenTable, group_by: str = "lang") -> dict[str, list[Utterance]]:
    """Utterances of every task, from data directories that have feats.scp and utt2num_frames."""
    pools: dict[str, list[Utterance]] = {}
    for data_dir in map(Path, data_dirs):
        data = read_data_dir(data_dir)
        for needed in ("feats.scp", "utt2num_frames"):
            if not (data_dir / needed).exists():
                raise FileNotFoundError(f"{data_dir / needed}: missing; run `metarecipe compute-feats {data_dir}`")
        feats, frames = read_key_values(data_dir / "feats.scp"), read_key_values(data_dir / "utt2num_frames")
        cmvn = read_key_values(data_dir / "cmvn.scp") if (data_dir / "cmvn.scp").exists() else {}
        groups = data.utt2lang if group_by == "lang" else (data.utt2spk if group_by == "spk" else
                                                          read_key_values(data_dir / f"utt2{group_by}"))
        for utt in data.utterances:
            pools.setdefault(groups[utt], []).append(Utterance(utt, feats[utt], int(frames[utt]),
                                                               tokens.encode(data.text[utt]),
                                                               cmvn.get(data.utt2spk[utt])))
    return pools


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


@functools.lru_cache(maxsize=4096)
def _cmvn_stats(location: str) -> np.ndarray:
    return kaldiio.load_mat(location)


def load_feats(utt: Utterance) -> torch.Tensor:
    """(T, D) features of an utterance, normalised with its speaker's CMVN statistics where it has them."""
    mat = kaldiio.load_mat(utt.feats)
    return torch.from_numpy(apply_cmvn(mat, _cmvn_stats(utt.cmvn)) if utt.cmvn else mat.copy())


def draw_meta_batch(pools: dict[str, list[Utterance]], tasks: list[str], support_seconds: float,
                    query_seconds: float, rng: np.random.Generator) -> MetaBatch:
    """Support and query sets of the named tasks, disjoint within each task, by seconds of speech."""
    support, query = [], []
    for task in tasks:
        support.append(draw_seconds(pools[task], support_seconds, rng))
        query.append(draw_seconds(pools[task], query_seconds, rng, exclude={u.utt for u in support[-1]}))
    if not all(query):
        raise ValueError(f"tasks {tasks}: too little data for {support_seconds:g} s of support and "
                         f"{query_seconds:g} s of query speech")
    return MetaBatch(collate(support), collate(query))


def collate(task_utts: list[list[Utterance]], utts_per_task: int | None = None) -> TaskSet:
    """Pads N tasks' utterances into a TaskSet (every task cut to the same utterance count)."""
    count = utts_per_task or min(len(u) for u in task_utts)
    chosen = [u[:count] for u in task_utts]
    frames = max(u.frames for task in chosen for u in task)
    dims = kaldiio.load_mat(chosen[0][0].feats).shape[1]
    labels = max(1, max(len(u.targets) for task in chosen for u in task))
    n = len(chosen)
    feats = torch.zeros(n, count, frames, dims)
    lengths = torch.zeros(n, count, dtype=torch.long)
    targets = torch.ones(n, count, labels, dtype=torch.long)
    target_lengths = torch.zeros(n, count, dtype=torch.long)
    for i, task in enumerate(chosen):
        for j, utt in enumerate(task):
            mat = load_feats(utt)
            feats[i, j, : mat.shape[0]] = mat
            lengths[i, j] = mat.shape[0]
            targets[i, j, : len(utt.targets)] = torch.tensor(utt.targets, dtype=torch.long)
            target_lengths[i, j] = len(utt.targets)
    return TaskSet(feats, lengths, targets, target_lengths)
