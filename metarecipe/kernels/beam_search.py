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

    def arrays(self) -> tuple:
        return (self.keys, self.logprob, self.next_node, self.backoff, self.suffix, self.start_node, self.end_word,
                self.unk_word, self.token_word, self.child_start, self.child_token, self.child_node, self.node_word,
                self.node_smear)

    def compiled(self):
        """The C++ DecoderLM (built once: the hash table of n-grams)."""
        if self._compiled is None:
            (keys, logprob, nxt, backoff, suffix, start, end, unk, token_word, child_start, child_token, child_node,
             node_word, node_smear) = self.arrays()
            ints = [torch.from_numpy(np.ascontiguousarray(a, np.int32))
                    for a in (nxt, suffix, token_word, child_start, child_token, child_node, node_word)]
            floats = [torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (logprob, backoff, node_smear)]
            self._compiled = extension().DecoderLM(
                MODES[self.mode], torch.from_numpy(np.ascontiguousarray(keys, np.int64)), floats[0], ints[0],
                floats[1], ints[1], start, end, unk, ints[2], ints[3], ints[4], ints[5], ints[6], floats[2])
        return self._compiled

    def numba_tuple(self) -> tuple:
        (keys, logprob, nxt, backoff, suffix, start, end, unk, token_word, child_start, child_token, child_node,
         node_word, node_smear) = self.arrays()
        i64 = [np.ascontiguousarray(a, np.int64) for a in (keys, nxt, suffix, token_word, child_start, child_token,
                                                             child_node, node_word)]
        f64 = [np.ascontiguousarray(a, np.float64) for a in (logprob, backoff, node_smear)]
        return (MODES[self.mode], i64[0], f64[0], i64[1], f64[1], i64[2], start, end, unk, i64[3], i64[4], i64[5],
                i64[6], i64[7], f64[2])


def _no_lm_tuple() -> tuple:
    empty_i, empty_f = np.zeros(1, np.int64), np.zeros(1, np.float64)
    return (0, empty_i, empty_f, empty_i, empty_f, empty_i, 0, 0, 0, empty_i, np.zeros(2, np.int64), empty_i,
            empty_i, np.full(1, -1, np.int64), empty_f)


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
    vocab = scores.shape[2]
    blank_skip = math.log(options.blank_skip) if options.blank_skip < 1.0 else math.inf
    token_beam = options.token_beam or vocab
    if backend == "cpp":
        found = extension().ctc_beam_search(scores, lengths, lm.compiled() if lm is not None else None,
                                            options.beam, options.beam_threshold, options.token_threshold, token_beam,
                                            blank_skip, options.lm_weight, options.insertion_bonus,
                                            options.oov_penalty, options.nbest, blank, space, options.lexicon_only)
        return [[Hypothesis(list(t), s, a, m) for t, s, a, m in nbest] for nbest in found]
    from metarecipe.kernels.beam_search_numba import decode_one

    opts = np.array([options.beam, options.beam_threshold, options.token_threshold, token_beam, blank_skip,
                     options.lm_weight, options.insertion_bonus, options.nbest, blank, space,
                     float(options.lexicon_only), options.oov_penalty], np.float64)
    tables = lm.numba_tuple() if lm is not None else _no_lm_tuple()
    results = []
    for b in range(scores.shape[0]):
        labels, offsets, found = decode_one(scores[b].numpy(), int(lengths[b]), opts, tables)
        results.append([Hypothesis(labels[offsets[k]:offsets[k + 1]].tolist(), *map(float, found[k]))
                        for k in range(found.shape[0])])
    return results
