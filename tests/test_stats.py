"""Bootstrap intervals over seeds and utterances (metarecipe.stats): coverage, width, pooling and pairing."""

import numpy as np
import pytest

from metarecipe.stats import Counts, difference_interval, rate_interval

TRUE_RATE = 0.2


def simulated(rng, seeds=3, utts=100, seed_spread=0.0, difficulty=None):
    """Counts of `seeds` models on `utts` utterances of 10-60 tokens whose error probability has mean TRUE_RATE
    (each utterance's drawn from a Beta, each seed's shifted by up to +-seed_spread), and the difficulties."""
    lengths = rng.integers(10, 61, size=utts)
    if difficulty is None:
        difficulty = rng.beta(2, 8, size=utts)  # mean 0.2
    shift = rng.uniform(-seed_spread, seed_spread, size=(seeds, 1))
    errors = rng.binomial(np.broadcast_to(lengths, (seeds, utts)), np.clip(difficulty + shift, 0, 1))
    return Counts(errors.astype(float), np.broadcast_to(lengths, (seeds, utts)).astype(float)), difficulty


def test_the_rate_pools_counts_instead_of_averaging_rates():
    counts = Counts(np.array([[1.0, 0.0]]), np.array([[1.0, 99.0]]))
    assert counts.rate == pytest.approx(1.0)  # 1 error in 100 tokens, not the mean of 100% and 0%
    assert rate_interval(counts).value == pytest.approx(1.0)


def test_the_interval_covers_the_true_rate_about_95_times_in_100():
    rng = np.random.default_rng(1)
    covered = []
    for _ in range(200):
        counts, _ = simulated(rng)
        estimate = rate_interval(counts, resamples=500)
        covered.append(estimate.low <= 100 * TRUE_RATE <= estimate.high)
    assert 0.9 <= np.mean(covered) <= 0.995


def test_the_interval_is_deterministic_and_narrows_as_one_over_the_root_of_the_utterances():
    rng = np.random.default_rng(2)
    counts, _ = simulated(rng)
    assert rate_interval(counts) == rate_interval(counts)
    widths = {}
    for utts in (100, 400):
        found = [rate_interval(simulated(rng, utts=utts)[0]) for _ in range(20)]
        widths[utts] = np.mean([e.high - e.low for e in found])
    assert 0.4 < widths[400] / widths[100] < 0.6  # 1 / sqrt(4)


def test_seeds_that_differ_widen_the_interval():
    rng = np.random.default_rng(3)
    same = [rate_interval(simulated(rng)[0]) for _ in range(20)]
    spread = [rate_interval(simulated(rng, seed_spread=0.1)[0]) for _ in range(20)]
    assert np.mean([e.high - e.low for e in spread]) > 1.5 * np.mean([e.high - e.low for e in same])


def test_a_constant_difference_on_every_utterance_is_significant_though_the_intervals_overlap():
    rng = np.random.default_rng(4)
    a, _ = simulated(rng)
    b = Counts(a.errors + 1, a.lengths)  # one more error on every utterance
    first, second = rate_interval(a), rate_interval(b)
    assert first.high > second.low  # unpaired, the two intervals overlap
    d = difference_interval(b, a)
    assert d.significant and 0 < d.low <= d.value == pytest.approx(b.rate - a.rate)


def test_a_noisy_zero_difference_is_not_significant():
    rng = np.random.default_rng(5)
    found = []
    for _ in range(100):
        a, difficulty = simulated(rng)
        b, _ = simulated(rng, difficulty=difficulty)  # the same utterances, other models: no true difference
        b = Counts(b.errors, a.lengths)
        found.append(difference_interval(a, b, resamples=500).significant)
    assert np.mean(found) <= 0.1


def test_seeds_are_drawn_in_pairs_only_when_both_sides_have_them():
    rng = np.random.default_rng(6)
    a, difficulty = simulated(rng, seeds=3)
    b, _ = simulated(rng, seeds=2, difficulty=difficulty)
    b = Counts(b.errors, a.lengths[:2])
    with pytest.raises(ValueError, match="same"):
        difference_interval(a, b)
    d = difference_interval(a, b, same_seeds=False)
    assert d.low < d.value < d.high
