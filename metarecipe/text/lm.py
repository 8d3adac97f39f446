"""N-gram language models over words or characters, trained with interpolated modified Kneser-Ney smoothing.

`NGramLM` is an ARPA back-off model; `NGramLM.train` estimates it as KenLM's lmplz does (Chen & Goodman 1998,
Heafield et al. 2013), and `add_one` gives a Laplace model of the same order to compare with. Counting is
vectorised: each n-gram gets an integer id from its context's id and its last word (numpy.unique), so a few MB
of text train in seconds.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from metarecipe.text import arpa
from metarecipe.text.tokens import SPACE, UNK

BOS, EOS = "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2  # in the vocabulary of a model trained here
BOS_LOG10 = -99.0  # <s> is never predicted; KenLM and SRILM write -99
DISCOUNT_FALLBACK = (0.5, 1.0, 1.5)  # lmplz's --discount_fallback
UNITS = ("word", "char")


def text_units(line: str, unit: str) -> list[str]:
    """The words of a line, or its characters with each run of whitespace as <space> (as in the token table)."""
    if unit == "word":
        return line.split()
    if unit == "char":
        return [SPACE if ch == " " else ch for ch in " ".join(line.split())]
    raise ValueError(f"unit is 'word' or 'char', got {unit!r}")


class LanguageModel(ABC):
    """Sentence scores and perplexity from `log10_prob`; subclasses set `order`, `vocab` and `word_ids`."""

    order: int
    vocab: list[str]
    word_ids: dict[str, int]

    @abstractmethod
    def log10_prob(self, word: int, context: Sequence[int] = ()) -> float:
        """log10 P(word | context), the context oldest first (only its last order-1 words count)."""

    def _history(self, context: Sequence[int]) -> tuple[int, ...]:
        return tuple(context[max(0, len(context) - self.order + 1):])

    def score_sentence(self, words: list[str], bos: bool = True, eos: bool = True) -> float:
        """Total log10 probability of the words (unknown ones as <unk>), after <s> and followed by </s>."""
        unk = self.word_ids[UNK]
        ids = [self.word_ids.get(w, unk) for w in words] + ([self.word_ids[EOS]] if eos else [])
        context = [self.word_ids[BOS]] if bos else []
        total = 0.0
        for word in ids:
            total += self.log10_prob(word, self._history(context))
            context.append(word)
        return total

    def perplexity(self, sentences: Iterable[list[str]]) -> tuple[float, int, int]:
        """(perplexity, tokens, OOV words) over the sentences, each scored with <s> and </s>.

        As in SRILM's and KenLM's reports, the tokens are the words plus one </s> a sentence (<s> is given, not
        predicted). OOV words are scored as <unk> and counted in, as KenLM's "perplexity including OOVs" (SRILM
        leaves them out).
        """
        total, tokens, oov = 0.0, 0, 0
        for words in sentences:
            total += self.score_sentence(words)
            tokens += len(words) + 1
            oov += sum(w not in self.word_ids for w in words)
        if not tokens:
            raise ValueError("perplexity of no sentences")
        return 10.0 ** (-total / tokens), tokens, oov


class NGramLM(LanguageModel):
    """An ARPA back-off n-gram model.

    `ngrams[n-1]` maps each n-gram (word ids, oldest first) to (log10 prob, log10 backoff) as in an ARPA file:
    backoff 0.0 when absent and at the highest order, <s> at log10 prob -99. `discounts[n-1]` holds D1, D2, D3+
    of order n for a model trained here (empty for one read from a file).
    """

    def __init__(self, vocab: list[str], ngrams: list[arpa.Table], discounts: Iterable[tuple[float, ...]] = ()):
        missing = {BOS, EOS, UNK} - set(vocab)
        if missing:
            raise ValueError(f"the vocabulary lacks {', '.join(sorted(missing))}")
        self.order = len(ngrams)
        self.vocab = list(vocab)
        self.word_ids = {w: i for i, w in enumerate(self.vocab)}
        self.ngrams = ngrams
        self.discounts = list(discounts)

    def log10_prob(self, word: int, context: Sequence[int] = ()) -> float:
        """The ARPA back-off rule: the longest n-gram (a context suffix, then the word) in the model, plus the
        backoffs of the longer context suffixes that are in the model."""
        history = self._history(context)
        backoff = 0.0
        for start in range(len(history) + 1):
            gram = history[start:] + (word,)
            entry = self.ngrams[len(gram) - 1].get(gram)
            if entry is not None:
                return backoff + entry[0]
            if len(gram) > 1:
                backoff += self.ngrams[len(gram) - 2].get(gram[:-1], (0.0, 0.0))[1]
        raise KeyError(f"word id {word} is not a 1-gram of the model")

    def write_arpa(self, path) -> None:
        """Writes the model as an ARPA file (gzipped when the name ends in .gz)."""
        arpa.write_arpa(path, self.vocab, self.ngrams)

    @classmethod
    def read_arpa(cls, path) -> NGramLM:
        """Loads an ARPA file written here, by KenLM or by SRILM (.gz too); ArpaError names a malformed line."""
        return cls(*arpa.read_arpa(path))

    @classmethod
    def train(cls, sentences: Iterable[list[str]], order: int,
              discount_fallback: tuple[float, float, float] = DISCOUNT_FALLBACK) -> NGramLM:
        """Interpolated modified Kneser-Ney estimate from sentences of words (or characters), as KenLM's lmplz.

        Sentences are padded as <s> w1 .. wk </s>. Adjusted counts a(.) are raw counts at the highest order and
        for n-grams starting with <s>, elsewhere the number of distinct words seen just before the n-gram.
        Order n discounts a(g) = 1, 2, 3+ by D_k = k - (k+1) Y t_(k+1) / t_k, Y = t_1 / (t_1 + 2 t_2), t_k the
        number of its n-grams with adjusted count k. With h' the context h less its oldest word,

            P(w | h) = (a(hw) - D(a(hw))) / a(h.) + gamma(h) P(w | h'),  gamma(h) = sum of D(a(hv)) / a(h.),

        down to the unigrams, which interpolate with the uniform distribution over the vocabulary less <s>.
        The ARPA backoff of h is gamma(h) (0.0 in log10 when nothing follows h), so the back-off rule gives the
        interpolated probabilities. Tiny or degenerate text can leave a t_k at zero or a D_k outside (0, k]:
        that order then takes `discount_fallback`, as lmplz --discount_fallback does.
        """
        if order < 1:
            raise ValueError(f"an n-gram order is at least 1, got {order}")
        vocab, stream, sentence = _encode(sentences)
        levels = _count(stream, sentence, order, len(vocab))
        adjusted = _adjusted_counts(levels)
        adjusted[0][BOS_ID] = 0.0  # <s> is never predicted
        prob = np.array([1.0 / (len(vocab) - 1)])  # the empty history: uniform over the vocabulary less <s>
        log_probs, gammas, discounts = [], [], []
        for level, counts in zip(levels, adjusted, strict=True):
            discounts.append(_discounts(counts, discount_fallback))
            prob, gamma = _interpolate(counts, level.context, len(prob), discounts[-1], prob[level.suffix])
            log_probs.append(np.log10(prob))
            gammas.append(gamma)
        log_probs[0][BOS_ID] = BOS_LOG10
        backoffs = [np.log10(gamma) for gamma in gammas[1:]] + [np.zeros(len(log_probs[-1]))]
        ngrams = [dict(zip(map(tuple, level.grams.tolist()), zip(lp.tolist(), bo.tolist(), strict=True), strict=True))
                  for level, lp, bo in zip(levels, log_probs, backoffs, strict=True)]
        return cls(vocab, ngrams, discounts)


class AddOneLM(LanguageModel):
    """Add-one (Laplace) smoothing, to compare with: P(w | h) = (c(hw) + 1) / (c(h.) + |V|), |V| the vocabulary
    less <s>, h the last order-1 words (fewer at the start of a sentence). `counts[n-1]` maps n-grams to counts."""

    def __init__(self, vocab: list[str], counts: list[dict[tuple[int, ...], int]]):
        self.order = len(counts)
        self.vocab = list(vocab)
        self.word_ids = {w: i for i, w in enumerate(self.vocab)}
        self.counts = counts
        self.totals = Counter({(): sum(c for (w,), c in counts[0].items() if w != self.word_ids[BOS])})
        for table in counts[1:]:
            for gram, count in table.items():
                self.totals[gram[:-1]] += count

    def log10_prob(self, word: int, context: Sequence[int] = ()) -> float:
        history = self._history(context)
        count = self.counts[len(history)].get(history + (word,), 0)
        return math.log10((count + 1) / (self.totals[history] + len(self.vocab) - 1))


def add_one(sentences: Iterable[list[str]], order: int) -> AddOneLM:
    """The add-one model of the given order from sentences of words (or characters)."""
    vocab, stream, sentence = _encode(sentences)
    levels = _count(stream, sentence, order, len(vocab))
    return AddOneLM(vocab, [dict(zip(map(tuple, level.grams.tolist()), level.counts.tolist(), strict=True))
                            for level in levels])


def _encode(sentences: Iterable[list[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The vocabulary (<unk>, <s>, </s>, then the words as they come) and the sentences, each padded with <s>
    and </s>, as one stream of word ids with the number of the sentence at each position."""
    word_ids = defaultdict(None, {UNK: UNK_ID, BOS: BOS_ID, EOS: EOS_ID})
    word_ids.default_factory = word_ids.__len__  # a new word gets the next id
    stream, lengths = [], []
    for words in sentences:
        if BOS in words or EOS in words:
            raise ValueError(f"{BOS} and {EOS} are added around each sentence, the text may not hold them: {words}")
        stream.append(BOS_ID)
        stream.extend(map(word_ids.__getitem__, words))
        stream.append(EOS_ID)
        lengths.append(len(words) + 2)
    if not lengths:
        raise ValueError("no sentences to train on")
    return list(word_ids), np.array(stream, dtype=np.int64), np.repeat(np.arange(len(lengths)), lengths)


@dataclass
class _Level:
    """The distinct n-grams of one order: word ids (a row each, oldest first), raw counts, and the indices in
    the order below of the context w1..w(n-1) and of the suffix w2..wn. `at` is the index of the n-gram that
    starts at each stream position (-1 where none fits in the sentence)."""

    grams: np.ndarray
    counts: np.ndarray
    context: np.ndarray
    suffix: np.ndarray
    at: np.ndarray


def _count(stream: np.ndarray, sentence: np.ndarray, order: int, vocab_size: int) -> list[_Level]:
    """The n-grams of orders 1..order; every word is a 1-gram, and below them is the empty history (index 0)."""
    none = np.zeros(vocab_size, dtype=np.int64)
    levels = [_Level(np.arange(vocab_size)[:, None], np.bincount(stream, minlength=vocab_size), none, none, stream)]
    for n in range(2, order + 1):
        below = levels[-1]
        fits = len(stream) - n + 1
        starts = np.flatnonzero(sentence[n - 1:] == sentence[:fits]) if fits > 0 else np.zeros(0, dtype=np.int64)
        keys = below.at[starts] * vocab_size + stream[starts + n - 1]
        unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        where = np.empty(len(unique), dtype=np.int64)
        where[inverse] = starts  # a position of each n-gram
        at = np.full(len(stream), -1, dtype=np.int64)
        at[starts] = inverse
        grams = stream[where[:, None] + np.arange(n)]
        levels.append(_Level(grams, counts, unique // vocab_size, below.at[where + 1], at))
    return levels


def _adjusted_counts(levels: list[_Level]) -> list[np.ndarray]:
    """Raw counts at the highest order and for n-grams starting with <s>; elsewhere the number of distinct
    words seen just before the n-gram (each n-gram one order up ending with it adds one)."""
    adjusted = []
    for level, above in pairwise(levels):
        left_extensions = np.bincount(above.suffix, minlength=len(level.counts))
        adjusted.append(np.where(level.grams[:, 0] == BOS_ID, level.counts, left_extensions).astype(float))
    adjusted.append(levels[-1].counts.astype(float))
    return adjusted


def _discounts(adjusted: np.ndarray, fallback: tuple[float, float, float]) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ from the counts of adjusted counts; `fallback` when they are degenerate."""
    t = [int(np.count_nonzero(adjusted == k)) for k in range(1, 5)]
    if min(t) == 0:
        return fallback
    y = t[0] / (t[0] + 2 * t[1])
    discounts = tuple(k - (k + 1) * y * t[k] / t[k - 1] for k in (1, 2, 3))
    return discounts if all(0 < d <= k for k, d in enumerate(discounts, 1)) else fallback


def _interpolate(adjusted: np.ndarray, context: np.ndarray, num_contexts: int, discounts: tuple[float, ...],
                 lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interpolated P(w | h) of each n-gram hw, given P(w | h') in `lower`, and gamma(h) of each context h
    (1.0 where nothing follows h)."""
    taken = np.array((0.0, *discounts))[np.minimum(adjusted, 3).astype(int)]
    total = np.bincount(context, weights=adjusted, minlength=num_contexts)
    seen = total > 0
    gamma = np.ones(num_contexts)
    gamma[seen] = np.bincount(context, weights=taken, minlength=num_contexts)[seen] / total[seen]
    prob = (adjusted - taken) / np.where(seen, total, 1.0)[context] + gamma[context] * lower
    return prob, gamma
