"""Greedy decoding and edit-distance scoring on random inputs against brute force."""

import itertools
import random

import torch

from metarecipe.decode import edit_counts, error_rate, greedy_decode


def levenshtein(a, b):
    """Textbook recursion, memoised: the distance only."""
    table = {}
    for i, j in itertools.product(range(len(a) + 1), range(len(b) + 1)):
        if min(i, j) == 0:
            table[i, j] = max(i, j)
        else:
            table[i, j] = min(table[i - 1, j] + 1, table[i, j - 1] + 1, table[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
    return table[len(a), len(b)]


def test_edit_counts_total_is_the_levenshtein_distance_and_counts_are_consistent():
    rng = random.Random()
    for _ in range(300):
        ref = [rng.randrange(4) for _ in range(rng.randrange(0, 9))]
        hyp = [rng.randrange(4) for _ in range(rng.randrange(0, 9))]
        counts = edit_counts(ref, hyp)
        assert counts.errors == levenshtein(ref, hyp)
        assert len(ref) - counts.dels + counts.ins == len(hyp)  # the alignment accounts for every token


def test_error_rate_sums_over_utterances():
    counts = error_rate([("abc", "abd"), ("hello", "helo"), ("", "x")])
    assert (counts.sub, counts.ins, counts.dels, counts.ref_len) == (1, 1, 1, 8)
    assert abs(counts.rate - 100 * 3 / 8) < 1e-12
    assert counts.summary("CER") == "%CER 37.50 [ 3 / 8, 1 ins, 1 del, 1 sub ]"
    words = error_rate([("the cat sat".split(), "the bat sat down".split())])
    assert words.summary() == "%WER 66.67 [ 2 / 3, 1 ins, 0 del, 1 sub ]"


def test_greedy_decoding_is_the_collapsed_argmax_path():
    log_probs = torch.full((2, 7, 4), -5.0)
    paths = [[1, 1, 0, 1, 2, 2, 0], [0, 3, 3, 3, 0, 0, 3]]
    for b, path in enumerate(paths):
        log_probs[b, torch.arange(7), torch.tensor(path)] = 0.0
    assert greedy_decode(log_probs, torch.tensor([7, 5])) == [[1, 1, 2], [3]]
