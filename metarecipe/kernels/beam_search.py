"""CTC prefix beam search with n-gram shallow fusion: the front over the cpp and numba backends.

The search (docs/beam_search.md) keeps the best ``beam`` prefixes per frame, tries per frame only the tokens
within ``token_threshold`` of the frame's best (at most ``token_beam`` of them), skips frames whose blank
probability reaches ``blank_skip``, and adds ``lm_weight`` x ln P_LM plus ``insertion_bonus`` per LM unit:
every token with an LM over tokens, every word (at the word boundary token) with an LM over words (plus
``oov_penalty`` for a word outside its vocabulary), every token without an LM. A word LM's score inside a word
is looked ahead as the best unigram below the partial word in the vocabulary trie, and replaced by the word's
own score at its end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from metarecipe.kernels.backends import extension, select_backend

OFFERED = ("cpp", "numba")
MODES = {"token": 1, "word": 2}


@dataclass
class LMTables:
    """An n-gram LM as a back-off state machine, in natural log (built by metarecipe.decode.lm_tables).

    Nodes are the empty context (node 0) and every n-gram of order < N; ``keys`` (E,) int64 sorted, each
    ``node << 32 | word`` of an n-gram with its ``logprob`` (E,) and ``next_node`` (E,), the longest suffix of
    the n-gram that is a node; per node its ``backoff`` (M,) and ``suffix`` (M,), the node without the oldest
    word. ``mode`` "token": ``token_word`` (V,) is the LM word of each CTC token (-1: none, scored as <unk>).
    ``mode`` "word": a trie of the vocabulary spelled in tokens, children of node n at
    ``child_start[n]:child_start[n + 1]`` in ``child_token``/``child_node``; ``node_word`` the word ending at
    a node (-1: none) and ``node_smear`` the best unigram ln-probability of the words below it.
    """

    mode: str
    keys: np.ndarray
    logprob: np.ndarray
    next_node: np.ndarray
    backoff: np.ndarray
    suffix: np.ndarray
    start_node: int
    end_word: int
    unk_word: int
    token_word: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    child_start: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int32))
    child_token: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    child_node: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    node_word: np.ndarray = field(default_factory=lambda: np.full(1, -1, np.int32))
    node_smear: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"LM mode must be one of {tuple(MODES)}, got {self.mode!r}")
        self._compiled = None

    def arrays(self, ints: type, floats: type) -> LMArrays:
        """The tables as the kernels take them: keys int64, the other integer arrays ``ints``, the float arrays
        ``floats``, all contiguous."""

        def cast(name, dtype):
            return np.ascontiguousarray(getattr(self, name), dtype)

        return LMArrays(mode=MODES[self.mode], keys=cast("keys", np.int64), logprob=cast("logprob", floats),
                        next_node=cast("next_node", ints), backoff=cast("backoff", floats),
                        suffix=cast("suffix", ints), start_node=int(self.start_node), end_word=int(self.end_word),
                        unk_word=int(self.unk_word), token_word=cast("token_word", ints),
                        child_start=cast("child_start", ints), child_token=cast("child_token", ints),
                        child_node=cast("child_node", ints), node_word=cast("node_word", ints),
                        node_smear=cast("node_smear", floats))

    def compiled(self):
        """The C++ DecoderLM (built once: the hash table of n-grams)."""
        if self._compiled is None:
            arrays = self.arrays(np.int32, np.float32)._asdict()
            tensors = {name: torch.from_numpy(a) if isinstance(a, np.ndarray) else a for name, a in arrays.items()}
            self._compiled = extension().DecoderLM(_to_struct(extension().LMArrays(), tensors))
        return self._compiled


class LMArrays(NamedTuple):
    """An LMTables as the kernels read it (fields as there): the C++ struct LMArrays (csrc/beam_search.h) of the
    same names, and what numba takes as it is. ``mode`` 1 (token LM), 2 (word LM), or 0: no LM."""

    mode: int
    keys: np.ndarray
    logprob: np.ndarray
    next_node: np.ndarray
    backoff: np.ndarray
    suffix: np.ndarray
    start_node: int
    end_word: int
    unk_word: int
    token_word: np.ndarray
    child_start: np.ndarray
    child_token: np.ndarray
    child_node: np.ndarray
    node_word: np.ndarray
    node_smear: np.ndarray


def _no_lm_arrays() -> LMArrays:
    """Mode 0 for numba, with arrays of the dtypes of LMTables.arrays(np.int64, np.float64)."""
    ints, floats = np.zeros(1, np.int64), np.zeros(1, np.float64)
    return LMArrays(mode=0, keys=ints, logprob=floats, next_node=ints, backoff=floats, suffix=ints, start_node=0,
                    end_word=0, unk_word=0, token_word=ints, child_start=np.zeros(2, np.int64), child_token=ints,
                    child_node=ints, node_word=np.full(1, -1, np.int64), node_smear=floats)


def _to_struct(struct, fields: dict):
    """struct (a pybind11 class of metarecipe._C) with each of fields set by name."""
    for name, value in fields.items():
        setattr(struct, name, value)
    return struct


@dataclass
class BeamSearchOptions:
    """Search settings; ln units. ``blank_skip`` is a probability (1.0 or more: never skip). ``oov_penalty`` is
    added (not weighted) for each word a word LM scores as <unk>: without it, joining words into one unknown
    word is often cheaper than scoring each of them."""

    beam: int = 16
    beam_threshold: float = 25.0
    token_threshold: float = -6.0
    token_beam: int | None = None
    blank_skip: float = 0.999
    lm_weight: float = 0.5
    insertion_bonus: float = 0.0
    oov_penalty: float = -10.0
    nbest: int = 1
    lexicon_only: bool = False

    def __post_init__(self):
        for name in ("beam", "nbest"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.token_beam is not None and self.token_beam < 1:
            raise ValueError(f"token_beam must be at least 1 or None, got {self.token_beam}")


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float
    acoustic: float
    lm: float


class SearchOptions(NamedTuple):
    """The settings the search kernels read, each commented in the C++ struct SearchOptions
    (csrc/beam_search.h) of the same fields; numba takes this tuple as it is."""

    beam: int
    beam_threshold: float
    token_threshold: float
    token_beam: int
    blank_skip: float
    lm_weight: float
    insertion_bonus: float
    oov_penalty: float
    nbest: int
    blank: int
    space: int
    lexicon_only: bool


def search_options(options: BeamSearchOptions, vocab: int, blank: int, space: int) -> SearchOptions:
    """The kernels' settings of a search over V = ``vocab`` tokens: ``blank_skip`` in ln (inf: never skip),
    ``token_beam`` None as V, every field of its one type (numba compiles once per type)."""
    return SearchOptions(
        beam=int(options.beam), beam_threshold=float(options.beam_threshold),
        token_threshold=float(options.token_threshold), token_beam=int(options.token_beam or vocab),
        blank_skip=math.log(options.blank_skip) if options.blank_skip < 1.0 else math.inf,
        lm_weight=float(options.lm_weight), insertion_bonus=float(options.insertion_bonus),
        oov_penalty=float(options.oov_penalty), nbest=int(options.nbest), blank=int(blank), space=int(space),
        lexicon_only=bool(options.lexicon_only))


def ctc_beam_search(log_probs: torch.Tensor, lengths: torch.Tensor, options: BeamSearchOptions | None = None,
                    lm: LMTables | None = None, blank: int = 0, space: int = -1,
                    backend: str | None = None) -> list[list[Hypothesis]]:
    """Prefix beam search: log_probs (B, T, V) log-probabilities, lengths (B,) -> per utterance its n-best
    (at most ``options.nbest``), best first.
    ``space`` is the word boundary token of a word LM."""
    options = options or BeamSearchOptions()
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (B, T, V), got shape {tuple(log_probs.shape)}")
    if lengths.shape != (log_probs.shape[0],):
        raise ValueError(f"lengths must have shape ({log_probs.shape[0]},), got {tuple(lengths.shape)}")
    if lm is not None and lm.mode == "word" and space < 0:
        raise ValueError("a word LM needs the word boundary token: pass space=")
    backend = select_backend("ctc_beam_search", torch.device("cpu"), backend, offered=OFFERED)
    scores = log_probs.detach().to("cpu", torch.float32).contiguous()
    lengths = lengths.to("cpu", torch.int64).clamp(max=scores.shape[1])
    settings = search_options(options, scores.shape[2], blank, space)
    if backend == "cpp":
        compiled = _to_struct(extension().SearchOptions(), settings._asdict())
        found = extension().ctc_beam_search(log_probs=scores, lengths=lengths, options=compiled,
                                            lm=lm.compiled() if lm is not None else None)
        return [[Hypothesis(list(t), s, a, m) for t, s, a, m in nbest] for nbest in found]
    from metarecipe.kernels.beam_search_numba import decode_one

    arrays = lm.arrays(np.int64, np.float64) if lm is not None else _no_lm_arrays()
    results = []
    for b in range(scores.shape[0]):
        labels, offsets, found = decode_one(scores[b].numpy(), int(lengths[b]), settings, arrays)
        results.append([Hypothesis(labels[offsets[k]:offsets[k + 1]].tolist(), *map(float, found[k]))
                        for k in range(found.shape[0])])
    return results
