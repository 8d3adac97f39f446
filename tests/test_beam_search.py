"""CTC prefix beam search against exhaustive search over every labelling, on fresh random inputs.

Every labelling of up to T labels is scored with the CTC loss (float64) plus, with an LM, its weighted LM
score from NGramLM.score_sentence (an independent back-off implementation in Python) and the insertion bonus.
With a beam wide enough to keep every prefix and no pruning, the search must find the best of them with the
same score, on both backends; with pruning on, the backends must agree with each other.
"""

import itertools
import math
import random

import pytest
import torch
from kernel_inputs import fresh_seed

from metarecipe.decode.lm_tables import lm_tables
from metarecipe.kernels.backends import available_backends
from metarecipe.kernels.beam_search import BeamSearchOptions, ctc_beam_search
from metarecipe.text.lm import NGramLM
from metarecipe.text.tokens import TokenTable

BACKENDS = [b for b in ("cpp", "numba") if b in available_backends()]
EXACT = {"beam": 100_000, "beam_threshold": 1e30, "token_threshold": -1e30, "blank_skip": 1.0}
LN10 = math.log(10.0)


def random_log_probs(seed: int, batch: int, frames: int, vocab: int, sharpness: float = 2.0):
    gen = torch.Generator().manual_seed(seed)
    log_probs = (sharpness * torch.randn(batch, frames, vocab, generator=gen, dtype=torch.float64)).log_softmax(-1)
    lengths = torch.randint(0, frames + 1, (batch,), generator=gen)
    lengths[0] = frames
    return log_probs, lengths


def ctc_log_likelihood(log_probs: torch.Tensor, labels: tuple[int, ...]) -> float:
    """ln P(labels | x) of one utterance (T, V) by torch's CTC loss in float64 (blank 0)."""
    if log_probs.shape[0] == 0:
        return 0.0 if not labels else -math.inf
    loss = torch.nn.functional.ctc_loss(log_probs.unsqueeze(1), torch.tensor([labels or (1,)]),
                                        torch.tensor([log_probs.shape[0]]), torch.tensor([len(labels)]),
                                        reduction="sum", zero_infinity=False)
    return -loss.item()


def exhaustive(log_probs: torch.Tensor, vocab: int, score_extra) -> list[tuple[float, tuple[int, ...]]]:
    """Every possible labelling of up to T labels with its total score, best first."""
    found = []
    for length in range(log_probs.shape[0] + 1):
        for labels in itertools.product(range(1, vocab), repeat=length):
            score = ctc_log_likelihood(log_probs, labels) + score_extra(labels)
            if score > -math.inf:
                found.append((score, labels))
    return sorted(found, key=lambda item: -item[0])


def check_best(found, expected, seed):
    """The search's best equals the exhaustive best (unless two labellings tie to 1e-6)."""
    (best_score, best_labels), runner_up = expected[0], expected[1][0] if len(expected) > 1 else -math.inf
    hyp = found[0]
    assert hyp.score == pytest.approx(best_score, abs=1e-4), f"seed {seed}"
    if best_score - runner_up > 1e-6:
        assert tuple(hyp.tokens) == best_labels, f"seed {seed}: {hyp.tokens} != {best_labels}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_lm_best_hypothesis_is_the_most_probable_labelling(backend):
    seed = fresh_seed()
    rng = random.Random(seed)
    for trial in range(6):
        vocab, frames = rng.randint(2, 4), rng.randint(1, 6)
        log_probs, lengths = random_log_probs(seed + trial, 3, frames, vocab)
        options = BeamSearchOptions(**EXACT, lm_weight=0.0, nbest=5)
        results = ctc_beam_search(log_probs, lengths, options, backend=backend)
        for b, found in enumerate(results):
            expected = exhaustive(log_probs[b, :lengths[b]], vocab, lambda labels: 0.0)
            check_best(found, expected, seed)
            # the n-best list is the top of the exhaustive ranking, in order
            for hyp, (score, _) in zip(found, expected, strict=False):
                assert hyp.score == pytest.approx(score, abs=1e-4), f"seed {seed}"
            assert len(found) == min(5, len(expected))


@pytest.mark.parametrize("backend", BACKENDS)
def test_insertion_bonus_counts_every_label(backend):
    seed = fresh_seed()
    log_probs, lengths = random_log_probs(seed, 3, 5, 3)
    options = BeamSearchOptions(**EXACT, lm_weight=0.0, insertion_bonus=1.5)
    for b, found in enumerate(ctc_beam_search(log_probs, lengths, options, backend=backend)):
        check_best(found, exhaustive(log_probs[b, :lengths[b]], 3, lambda labels: 1.5 * len(labels)), seed)


def symbol_table(chars: str) -> TokenTable:
    return TokenTable(["<blk>", "<space>", "<unk>", *chars])


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_lm_fusion_finds_the_best_joint_score(backend):
    """A character LM scored on every token (and </s>): the search maximises CTC + w * LM + bonus."""
    seed = fresh_seed()
    rng = random.Random(seed)
    tokens = symbol_table("ab")
    sentences = [[rng.choice(["a", "b", "<space>"]) for _ in range(rng.randint(1, 6))] for _ in range(30)]
    lm = NGramLM.train(sentences, order=3)
    tables = lm_tables(lm, tokens, "token")
    weight, bonus = 0.8, 0.3

    def lm_score(labels):
        words = [tokens.symbols[t] for t in labels]
        return weight * lm.score_sentence(words) * LN10 + bonus * len(labels)

    log_probs, lengths = random_log_probs(seed, 3, 5, len(tokens) - 1)  # no <unk> output: V = 4
    log_probs = torch.cat([log_probs[..., :2], torch.full_like(log_probs[..., :1], -1e4), log_probs[..., 2:]], -1)
    log_probs = log_probs.log_softmax(-1)
    options = BeamSearchOptions(**EXACT, lm_weight=weight, insertion_bonus=bonus)
    for b, found in enumerate(ctc_beam_search(log_probs, lengths, options, tables, backend=backend)):
        expected = exhaustive(log_probs[b, :lengths[b]], len(tokens), lm_score)
        check_best(found, expected, seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lexicon_only", [False, True])
def test_word_lm_fusion_scores_words_at_boundaries(backend, lexicon_only):
    """A word LM over 'a', 'ab', 'bab', 'bba' (and <unk> for other words): scored when a space or the end of the
    utterance ends a word; with lexicon_only, labellings with other words are not hypotheses, except that the
    last word may be unfinished (a prefix of a vocabulary word, scored as <unk>)."""
    seed = fresh_seed()
    rng = random.Random(seed)
    tokens = TokenTable(["<blk>", "<space>", "<unk>", "a", "b"])
    vocab_words = ["a", "ab", "bab", "bba"]  # "b", "ba", "bb" spell towards words but are none
    lm = NGramLM.train([[rng.choice(vocab_words) for _ in range(rng.randint(1, 4))] for _ in range(30)], order=2)
    tables = lm_tables(lm, tokens, "word")
    weight, bonus, oov_penalty = 1.2, -0.5, -3.0

    spelled_prefixes = {w[:k] for w in lm.vocab for k in range(1, len(w) + 1)}

    def lm_score(labels):
        words = tokens.decode(labels).split()
        if lexicon_only:  # finished words in the vocabulary; an unfinished last word at least spells towards one
            unfinished = bool(labels) and labels[-1] != tokens.ids["<space>"] and bool(words)
            finished = words[:-1] if unfinished else words
            if any(w not in lm.word_ids for w in finished) or (unfinished and words[-1] not in spelled_prefixes):
                return -math.inf
        oov = sum(w not in lm.word_ids for w in words)
        return weight * lm.score_sentence(words) * LN10 + bonus * len(words) + oov_penalty * oov

    log_probs, lengths = random_log_probs(seed, 3, 6, 5)
    log_probs[..., 2] = -1e4  # <unk> never comes out
    log_probs = log_probs.log_softmax(-1)
    options = BeamSearchOptions(**EXACT, lm_weight=weight, insertion_bonus=bonus, oov_penalty=oov_penalty,
                                lexicon_only=lexicon_only)
    results = ctc_beam_search(log_probs, lengths, options, tables, space=tokens.ids["<space>"], backend=backend)
    for b, found in enumerate(results):
        expected = [e for e in exhaustive(log_probs[b, :lengths[b]], 5, lm_score) if 2 not in e[1]]
        check_best(found, expected, seed)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs the compiled extension and numba")
@pytest.mark.parametrize("unit", [None, "token", "word"])
def test_backends_agree_with_pruning(unit):
    """Longer inputs, every pruning on: cpp and numba give the same n-best lists."""
    seed = fresh_seed()
    rng = random.Random(seed)
    tokens = symbol_table("abcde")
    if unit == "token":
        text = [[rng.choice("abcde<") for _ in range(rng.randint(3, 20))] for _ in range(200)]
        lm = NGramLM.train([["<space>" if c == "<" else c for c in line] for line in text], order=4)
    else:
        words = ["".join(rng.choice("abcde") for _ in range(rng.randint(1, 4))) for _ in range(40)]
        lm = NGramLM.train([[rng.choice(words) for _ in range(rng.randint(1, 8))] for _ in range(200)], order=3)
    tables = lm_tables(lm, tokens, unit) if unit else None
    log_probs, lengths = random_log_probs(seed, 4, 80, len(tokens), sharpness=4.0)
    options = BeamSearchOptions(beam=12, beam_threshold=12.0, token_threshold=-6.0, token_beam=4, blank_skip=0.99,
                                lm_weight=0.7, insertion_bonus=0.5, nbest=4)
    cpp, numba = (ctc_beam_search(log_probs, lengths, options, tables, space=1, backend=b) for b in BACKENDS)
    for ours, theirs in zip(cpp, numba, strict=True):
        assert [h.tokens for h in ours] == [h.tokens for h in theirs], f"seed {seed}"
        for a, b in zip(ours, theirs, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-3) and a.lm == pytest.approx(b.lm, abs=1e-3)


ARPA_WITH_POSITIVE_BACKOFFS = """\\data\\
ngram 1=6
ngram 2=5

\\1-grams:
-0.9\t<unk>
-99\t<s>\t0.4
-0.5\t</s>
-0.4\ta\t0.3
-0.6\tb\t0.5
-0.7\tc\t-0.2

\\2-grams:
-0.1\t<s> a
-0.2\ta b
-1.5\ta a
-0.05\tb c
-0.3\tc </s>

\\end\\
"""


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs the compiled extension and numba")
def test_token_lm_with_positive_backoffs_agrees(tmp_path):
    """cpp skips extensions and defers LM scores by bounding the LM (back-off weights above 0 included); the
    n-best lists must still equal numba's, which scores everything."""
    seed = fresh_seed()
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(ARPA_WITH_POSITIVE_BACKOFFS)
    tokens = symbol_table("abc")
    tables = lm_tables(NGramLM.read_arpa(arpa), tokens, "token")
    log_probs, lengths = random_log_probs(seed, 6, 60, len(tokens), sharpness=3.0)
    options = BeamSearchOptions(beam=6, beam_threshold=10.0, token_threshold=-8.0, lm_weight=1.2,
                                insertion_bonus=-0.3, nbest=3)
    cpp, numba = (ctc_beam_search(log_probs, lengths, options, tables, backend=b) for b in BACKENDS)
    for ours, theirs in zip(cpp, numba, strict=True):
        assert [h.tokens for h in ours] == [h.tokens for h in theirs], f"seed {seed}"
        for a, b in zip(ours, theirs, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-3), f"seed {seed}"


def test_bad_arguments_are_named():
    log_probs, lengths = random_log_probs(0, 2, 5, 4)
    with pytest.raises(ValueError, match="log_probs must be"):
        ctc_beam_search(log_probs[0], lengths)
    with pytest.raises(ValueError, match="lengths must have shape"):
        ctc_beam_search(log_probs, lengths[:1])
    with pytest.raises(ValueError, match="beam must be at least 1"):
        BeamSearchOptions(beam=0)
    tables = lm_tables(NGramLM.train([["ab", "b"]], order=2), symbol_table("ab"), "word")
    with pytest.raises(ValueError, match="word boundary token"):
        ctc_beam_search(log_probs, lengths, lm=tables)
