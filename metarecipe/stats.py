"""Bootstrap confidence intervals of error rates pooled over adaptation seeds and test utterances.

The errors and reference lengths of a result are matrices, seeds x utterances: every seed (a model adapted on
other random minutes of the budget) decodes the same utterances. A resample draws seeds with replacement, then
utterances with replacement (one draw shared by every seed, as the utterances are), and its rate is its total
errors over its total reference length in percent: counts are pooled, rates are never averaged. Intervals are the
2.5 and 97.5 percentiles of the resampled rates. A difference of two results is resampled in pairs: the same
utterances, and the same seeds when both sides have them, on both sides. Every interval draws from a
generator seeded with a fixed number, so the same inputs always give the same intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class Counts:
    """errors[s, u] and lengths[s, u]: seed s's errors on utterance u and u's reference length (0 and 0 where
    seed s has no score of u)."""
    errors: np.ndarray
    lengths: np.ndarray

    def __post_init__(self):
        if self.errors.ndim != 2 or self.errors.shape != self.lengths.shape or 0 in self.errors.shape:
            raise ValueError(f"errors {self.errors.shape} and lengths {self.lengths.shape}: want the same "
                             "non-empty seeds x utterances shape")

    @property
    def rate(self) -> float:
        """Total errors over total reference length, in percent."""
        return 100.0 * float(self.errors.sum()) / float(self.lengths.sum())


@dataclass(frozen=True)
class Estimate:
    """A value (a rate, or a difference of rates) and its confidence interval."""
    value: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """For a difference: the interval excludes 0."""
        return self.low > 0 or self.high < 0


def _weights(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """How often each of n items is drawn in each resample: (resamples, n)."""
    drawn = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(drawn.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _resampled_rates(counts: Counts, seed_weights: np.ndarray, utt_weights: np.ndarray) -> np.ndarray:
    errors = ((seed_weights @ counts.errors) * utt_weights).sum(axis=1)
    lengths = ((seed_weights @ counts.lengths) * utt_weights).sum(axis=1)
    rates = np.full(len(errors), np.nan)
    np.divide(100.0 * errors, lengths, out=rates, where=lengths > 0)
    return rates


def _interval(value: float, samples: np.ndarray, level: float) -> Estimate:
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.nanpercentile(samples, [tail, 100.0 - tail])
    return Estimate(value, float(low), float(high))


def rate_interval(counts: Counts, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED) -> Estimate:
    """The pooled rate and its bootstrap interval over seeds and utterances."""
    rng = np.random.default_rng(seed)
    seeds, utts = counts.errors.shape
    seed_weights = _weights(rng, seeds, resamples)
    utt_weights = _weights(rng, utts, resamples)
    return _interval(counts.rate, _resampled_rates(counts, seed_weights, utt_weights), level)


def difference_interval(a: Counts, b: Counts, same_seeds: bool = True, resamples: int = RESAMPLES,
                        level: float = LEVEL, seed: int = SEED) -> Estimate:
    """rate(a) - rate(b) and its paired bootstrap interval. The utterance axes must match (the same utterances in
    the same order); with same_seeds, so must the seed axes (seed s of a was adapted on the same minutes as seed s
    of b), and a resample draws the same seeds on both sides; without, each side's seeds are drawn on their own."""
    if a.errors.shape[1] != b.errors.shape[1] or (same_seeds and a.errors.shape[0] != b.errors.shape[0]):
        raise ValueError(f"shapes {a.errors.shape} and {b.errors.shape}: a paired difference needs the same "
                         "utterances (and with same_seeds the same seeds) on both sides")
    rng = np.random.default_rng(seed)
    weights_a = _weights(rng, a.errors.shape[0], resamples)
    weights_b = weights_a if same_seeds else _weights(rng, b.errors.shape[0], resamples)
    utt_weights = _weights(rng, a.errors.shape[1], resamples)
    samples = _resampled_rates(a, weights_a, utt_weights) - _resampled_rates(b, weights_b, utt_weights)
    return _interval(a.rate - b.rate, samples, level)
