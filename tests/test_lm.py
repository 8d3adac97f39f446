"""N-gram LMs: modified Kneser-Ney sums to one, beats add-one, follows the textbook formula, and its ARPA files
round-trip and score the same in KenLM; hand-written and broken ARPA files; the train-lm command."""

import functools
import gzip
import itertools
import math
import random
import re
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path

import pytest

from metarecipe.cli.main import main
from metarecipe.text.arpa import ArpaError
from metarecipe.text.lm import DISCOUNT_FALLBACK, NGramLM, add_one, text_units
from metarecipe.text.normalize import normalize
from metarecipe.text.tokens import TokenTable

FORTUNES = Path("/usr/share/games/fortunes")


@functools.cache
def fortune_lines(lang: str, limit: int = 6000) -> list[str]:
    """Up to `limit` normalised lines of the fortunes of a language (a file, or a folder of them), '%' left out."""
    path = FORTUNES / lang
    if not path.exists():
        pytest.skip(f"{path} is missing (Debian package fortunes-{lang})")
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and not p.is_symlink() and p.suffix != ".dat")
    lines = []
    for file in files:
        for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
            text = normalize(line, lang) if line.strip() not in ("", "%") else None
            if text:
                lines.append(text)
            if len(lines) == limit:
                return lines
    return lines


def split(sentences: list) -> tuple[list, list]:
    """90 % to train on, every tenth sentence held out."""
    return [s for i, s in enumerate(sentences) if i % 10], [s for i, s in enumerate(sentences) if i % 10 == 0]


def predicted(model) -> list[int]:
    return [i for i, w in enumerate(model.vocab) if w != "<s>"]


def brute_force_mass(model, context) -> float:
    return math.fsum(10 ** model.log10_prob(w, context) for w in predicted(model))


def backoff_mass(model, context, following, memo) -> float:
    """The sum of P(w | context) over the vocabulary by the ARPA back-off rule, from the words seen after the
    context: the n-grams listed, plus the backoff times what the shorter context leaves to the other words."""
    if context not in memo:
        if not context:
            memo[context] = brute_force_mass(model, ())
        else:
            seen = following.get(context, ())
            listed = math.fsum(10 ** model.ngrams[len(context)][context + (w,)][0] for w in seen)
            left = backoff_mass(model, context[1:], following, memo) - math.fsum(
                10 ** model.log10_prob(w, context[1:]) for w in seen)
            backoff = model.ngrams[len(context) - 1].get(context, (0.0, 0.0))[1]
            memo[context] = listed + 10 ** backoff * left
    return memo[context]


def assert_sums_to_one(model, rng: random.Random, samples: int = 3) -> None:
    """Exactly for every context in the model (and the empty one), by brute force for a few seen and unseen."""
    following = defaultdict(list)
    for table in model.ngrams[1:]:
        for gram in table:
            following[gram[:-1]].append(gram[-1])
    memo = {}
    seen = [gram for table in model.ngrams[:-1] for gram in table]
    for context in [(), *seen]:
        assert backoff_mass(model, context, following, memo) == pytest.approx(1, abs=1e-6), context
    ids = range(len(model.vocab))
    unseen = [tuple(rng.choice(ids) for _ in range(n)) for n in range(1, model.order) for _ in range(samples)]
    sampled = [g for table in model.ngrams[:-1] for g in rng.sample(sorted(table), min(samples, len(table)))]
    for context in [(), *sampled, *unseen]:
        assert brute_force_mass(model, context) == pytest.approx(1, abs=1e-6), context


def test_text_units_match_the_token_table():
    assert text_units("  der Hund\tbellt \n", "word") == ["der", "Hund", "bellt"]
    chars = text_units(" la  hundo\tbojas ", "char")
    assert chars == ["l", "a", "<space>", *"hundo", "<space>", *"bojas"]
    table = TokenTable.from_texts(["la hundo bojas"])
    assert [table.symbols[i] for i in table.encode(" la  hundo\tbojas ")] == chars
    with pytest.raises(ValueError, match="'word' or 'char'"):
        text_units("x", "phone")


@pytest.mark.parametrize("order", [2, 3, 4, 5])
@pytest.mark.parametrize("unit", ["word", "char"])
@pytest.mark.parametrize("lang", ["eo", "de"])
def test_probabilities_sum_to_one_for_every_context(lang, unit, order):
    lines = fortune_lines(lang)[:1500 if unit == "word" else 400]
    model = NGramLM.train([text_units(line, unit) for line in lines], order)
    assert [len(table) > 0 for table in model.ngrams] == [True] * order
    assert_sums_to_one(model, random.Random(order))


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("sentences", [
    [["a"]], [["a"] * 6], [["x"] * 9, ["x"]], [[], ["b"]], [["<unk>", "a", "a"], list("aaaa")],
], ids=["one-word", "repeated", "repeated-twice", "empty-sentence", "literal-unk"])
def test_tiny_and_degenerate_text_falls_back_and_still_sums_to_one(sentences, order):
    model = NGramLM.train(sentences, order)
    assert DISCOUNT_FALLBACK in model.discounts
    ids = range(len(model.vocab))
    for length in range(order):
        for context in itertools.product(ids, repeat=length):
            assert brute_force_mass(model, context) == pytest.approx(1, abs=1e-9), context
            assert brute_force_mass(add_one(sentences, order), context) == pytest.approx(1, abs=1e-9), context


def test_no_sentences_or_sentence_markers_in_the_text_are_errors():
    with pytest.raises(ValueError, match="no sentences"):
        NGramLM.train([], 3)
    with pytest.raises(ValueError, match="added around each sentence"):
        NGramLM.train([["a", "</s>", "b"]], 3)


@pytest.mark.parametrize("lang", ["eo", "de"])
@pytest.mark.parametrize("unit, order", [("word", 3), ("char", 6)])
def test_kneser_ney_beats_add_one_on_held_out_text(lang, unit, order):
    train, test = split([text_units(line, unit) for line in fortune_lines(lang)])
    ppl, tokens, oov = NGramLM.train(train, order).perplexity(test)
    laplace_ppl, laplace_tokens, laplace_oov = add_one(train, order).perplexity(test)
    assert tokens == laplace_tokens == sum(len(s) + 1 for s in test)
    assert oov == laplace_oov
    assert ppl < 0.8 * laplace_ppl


# 'a dog' 4, '<s> the' 3 ... so bigram counts of counts t1..t4 = 12, 6, 4, 2, and distinct left neighbours
# (</s> 4, here 3, a dog mat on ran sat the 2, cat my slept 1) give the unigrams t1..t4 = 3, 7, 1, 1.
TINY = ["a dog sat here", "the cat sat", "the cat ran here", "the cat ran on the mat", "a dog ran on a mat",
        "a dog slept here", "my dog sat on the mat", "a dog slept"]


def textbook_discounts(counts) -> tuple:
    t = Counter(counts)
    if not all(t[k] for k in range(1, 5)):
        return DISCOUNT_FALLBACK
    y = t[1] / (t[1] + 2 * t[2])
    discounts = tuple(k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3))
    return discounts if all(0 < d <= k for k, d in enumerate(discounts, 1)) else DISCOUNT_FALLBACK


def textbook_kneser_ney(sentences: list[list[str]], order: int):
    """Chen & Goodman's interpolated modified Kneser-Ney, straight from the formula, over words."""
    padded = [("<s>", *s, "</s>") for s in sentences]
    raw = [Counter(s[i:i + n] for s in padded for i in range(len(s) - n + 1)) for n in range(1, order + 1)]
    left_neighbours = [Counter(g[1:] for g in raw[n]) for n in range(1, order)]
    adjusted = [Counter({g: c if g[0] == "<s>" else left[g] for g, c in raw[n].items()})
                for n, left in enumerate(left_neighbours)] + [raw[-1]]
    del adjusted[0][("<s>",)]
    discounts = [(0.0, *textbook_discounts(a.values())) for a in adjusted]
    targets = {w for s in padded for w in s} - {"<s>"} | {"<unk>"}

    def prob(word: str, history: tuple) -> float:
        lower = prob(word, history[1:]) if history else 1 / len(targets)
        counts = adjusted[len(history)]
        following = {g[-1]: c for g, c in counts.items() if g[:-1] == history}
        if not following:
            return lower
        d = discounts[len(history)]
        gamma = sum(d[min(c, 3)] for c in following.values()) / sum(following.values())
        count = following.get(word, 0)
        return (count - d[min(count, 3)]) / sum(following.values()) + gamma * lower

    return prob, targets, discounts


@pytest.mark.parametrize("order", [2, 3])
def test_probabilities_follow_the_textbook_formula(order):
    sentences = [s.split() for s in TINY]
    model = NGramLM.train(sentences, order)
    prob, targets, discounts = textbook_kneser_ney(sentences, order)
    assert DISCOUNT_FALLBACK not in model.discounts
    assert len(model.discounts) == len(discounts)
    for ours, textbook in zip(model.discounts, discounts, strict=True):
        assert ours == pytest.approx(textbook[1:])
    words = sorted(targets | {"<s>"})
    for history in itertools.chain.from_iterable(itertools.product(words, repeat=n) for n in range(order)):
        for word in targets:
            ours = model.log10_prob(model.word_ids[word], [model.word_ids[w] for w in history])
            assert ours == pytest.approx(math.log10(prob(word, history)), abs=1e-9), (history, word)


def test_a_bigram_probability_by_hand():
    model = NGramLM.train([s.split() for s in TINY], 2)
    # unigrams: Y = 3/17, D1 = 1 - 2Y 7/3 = 3/17, D2 = 2 - 3Y 1/7 = 229/119, D3+ = 3 - 4Y 1/1 = 39/17
    assert model.discounts[0] == pytest.approx((3 / 17, 229 / 119, 39 / 17))
    # bigrams: Y = 12/24, D1 = 1 - 2Y 6/12 = 1/2, D2 = 2 - 3Y 4/6 = 1, D3+ = 3 - 4Y 2/4 = 2
    assert model.discounts[1] == pytest.approx((0.5, 1.0, 2.0))
    # P(cat): continuation count 1 of 24, 13 words (</s> and <unk> in, <s> out), gamma = (2 D3 + 7 D2 + 3 D1) / 24
    gamma = (2 * Fraction(39, 17) + 7 * Fraction(229, 119) + 3 * Fraction(3, 17)) / 24
    p_cat = (1 - Fraction(3, 17)) / 24 + gamma / 13
    # P(cat | the): 'the cat' 3 and 'the mat' 2, so (3 - D3) / 5 + (D3 + D2) / 5 P(cat)
    p_cat_the = Fraction(3 - 2, 5) + Fraction(2 + 1, 5) * p_cat
    the, cat = model.word_ids["the"], model.word_ids["cat"]
    assert 10 ** model.ngrams[0][(cat,)][0] == pytest.approx(float(p_cat), abs=1e-12)
    assert 10 ** model.log10_prob(cat, [the]) == pytest.approx(float(p_cat_the), abs=1e-12)
    assert model.ngrams[0][(the,)][1] == pytest.approx(math.log10(3 / 5))


@pytest.mark.parametrize("name", ["lm.arpa", "lm.arpa.gz"])
def test_write_then_read_arpa_round_trips(tmp_path, name):
    train, test = split(fortune_lines("eo"))
    for unit, order in (("word", 3), ("char", 5)):
        model = NGramLM.train([text_units(line, unit) for line in train], order)
        model.write_arpa(tmp_path / name)
        loaded = NGramLM.read_arpa(tmp_path / name)
        assert loaded.order == order and loaded.vocab == model.vocab
        for table, loaded_table in zip(model.ngrams, loaded.ngrams, strict=True):
            assert table.keys() == loaded_table.keys()
            errors = [max(abs(prob - loaded_table[gram][0]), abs(backoff - loaded_table[gram][1]))
                      for gram, (prob, backoff) in table.items()]
            assert max(errors) < 1e-6
        for line in test[:30]:
            units = text_units(line, unit)
            assert loaded.score_sentence(units) == pytest.approx(model.score_sentence(units), abs=1e-5)
    assert not list(tmp_path.glob(".*tmp"))


KENLM_STYLE = """This text before the data section is ignored.

\\data\\
ngram 1=5
ngram  2 = 3

\\1-grams:
-1.2\t<unk>\t0
-99\t<s>\t-0.5
-0.8\t</s>

-0.6\ta\t-0.25
-0.7 b

\\2-grams:
-0.2\t<s> a
-0.3 a  b
-0.4\tb </s>

\\end\\
"""


def test_a_kenlm_style_arpa_loads_and_backs_off(tmp_path):
    (tmp_path / "hand.arpa").write_text(KENLM_STYLE, encoding="utf-8")
    model = NGramLM.read_arpa(tmp_path / "hand.arpa")
    a, b, end = (model.word_ids[w] for w in ("a", "b", "</s>"))
    assert model.ngrams[0][(b,)] == (-0.7, 0.0)
    assert model.log10_prob(b, [a]) == pytest.approx(-0.3)
    assert model.log10_prob(a, [b]) == pytest.approx(-0.6)  # b has no backoff
    assert model.log10_prob(end, [a]) == pytest.approx(-0.25 - 0.8)
    assert model.score_sentence(["a", "b"]) == pytest.approx(-0.2 - 0.3 - 0.4)
    assert model.score_sentence(["zz"]) == pytest.approx(-0.5 - 1.2 - 0.8)  # zz as <unk>
    assert model.score_sentence(["b"], bos=False, eos=False) == pytest.approx(-0.7)
    ppl, tokens, oov = model.perplexity([["a", "b"], ["zz"]])
    assert (tokens, oov) == (5, 1) and ppl == pytest.approx(10 ** ((0.9 + 2.5) / 5))


def test_an_srilm_arpa_without_unk_gets_it_as_kenlm_does(tmp_path):
    (tmp_path / "srilm.arpa").write_text(KENLM_STYLE.replace("-1.2\t<unk>\t0\n", "").replace("1=5", "1=4"))
    model = NGramLM.read_arpa(tmp_path / "srilm.arpa")
    assert model.ngrams[0][(model.word_ids["<unk>"],)] == (-100.0, 0.0)


@pytest.mark.parametrize("old, new, line, message", [
    ("-0.3 a  b", "-0.3 a b c d", 17, "2 word(s) and an optional backoff"),
    ("-0.7 b", "-O.7 b", 13, "not a number"),
    ("-0.3 a  b", "-0.3 a b c", 17, "not a number"),
    ("-0.4\tb </s>", "-0.4\tb q", 18, "the word 'q' is not among the 1-grams"),
    ("ngram  2 = 3", "ngram 2=4", 15, "3 2-grams, but the header says ngram 2=4"),
    ("ngram  2 = 3", "ngram 3=3", 5, "expected 'ngram 2=COUNT'"),
    ("\\2-grams:", "\\3-grams:", 15, "expected \\2-grams:"),
    ("-0.2\t<s> a", "-0.2\ta  b", 17, "listed twice"),
    ("\\end\\", "", 18, "the file ends where \\end\\ should come"),
])
def test_a_malformed_arpa_is_an_error_naming_the_line(tmp_path, old, new, line, message):
    path = tmp_path / "bad.arpa"
    path.write_text(KENLM_STYLE.replace(old, new), encoding="utf-8")
    with pytest.raises(ArpaError) as raised:
        NGramLM.read_arpa(path)
    assert str(raised.value).startswith(f"{path}:{line}: ") and message in str(raised.value)


@pytest.mark.parametrize("name", ["latin1.arpa", "latin1.arpa.gz"])
def test_a_non_utf8_arpa_is_an_error_naming_the_file_and_line(tmp_path, name):
    content = KENLM_STYLE.replace("-0.7 b", "-0.7 caf\xe9").encode("latin-1")
    path = tmp_path / name
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    with pytest.raises(ArpaError, match=f"^{re.escape(str(path))}:13: not UTF-8"):
        NGramLM.read_arpa(path)


def test_an_unreadable_arpa_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "broken.arpa.gz").write_bytes(b"not gzip")
    for path in (tmp_path / "missing.arpa", tmp_path / "broken.arpa.gz"):
        with pytest.raises(ArpaError, match=f"^{re.escape(str(path))}: cannot read"):
            NGramLM.read_arpa(path)


def test_kenlm_in_flashlight_scores_our_arpa_the_same(tmp_path):
    kenlm_module = pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    dictionary = pytest.importorskip("flashlight.lib.text.dictionary")
    train, test = split(fortune_lines("eo"))
    for unit, order in (("word", 2), ("word", 4), ("char", 6)):
        model = NGramLM.train([text_units(line, unit) for line in train], order)
        model.write_arpa(tmp_path / "lm.arpa")
        held_out = [text_units(line, unit) for line in test[:40]]
        words = dictionary.Dictionary(sorted(set(model.vocab).union(*held_out)))  # KenLM maps OOVs to <unk>
        kenlm = kenlm_module.KenLM(str(tmp_path / "lm.arpa"), words)
        assert (unit == "char") or any(w not in model.word_ids for s in held_out for w in s)
        for units in held_out:
            state, total = kenlm.start(False), 0.0  # start(False): after <s>; scores are log10
            for symbol in units:
                state, score = kenlm.score(state, words.get_index(symbol))
                total += score
            total += kenlm.finish(state)[1]  # </s>
            assert total == pytest.approx(model.score_sentence(units), abs=1e-4), units


def test_train_lm_command(tmp_path, capsys):
    text, dev, out = tmp_path / "text", tmp_path / "dev", tmp_path / "lm.arpa"
    text.write_text("utt1 Der Hund bellt.\nutt2 Die Katze schläft!\nutt3 Das ist Москва.\nutt4 Der Hund schläft.\n",
                    encoding="utf-8")
    dev.write_text("utt9 Die Katze bellt.\n", encoding="utf-8")
    common = ["train-lm", "--text", str(text), "--kaldi-text", "--normalize", "de", "--out", str(out)]
    assert main([*common, "--unit", "char", "--dev", str(dev)]) == 0
    printed = capsys.readouterr().out
    model = NGramLM.read_arpa(out)
    assert model.order == 6 and "<space>" in model.vocab and "d" in model.vocab and "." not in model.vocab
    ppl, tokens, oov = model.perplexity([text_units("die katze bellt", "char")])
    assert "1 lines dropped by normalisation (de)" in printed and "ngram 6=" in printed
    assert f"perplexity {ppl:.2f} over {tokens} tokens" in printed and f"{oov} OOV" in printed

    assert main(common) == 0
    assert NGramLM.read_arpa(out).order == 3 and "ngram 3=" in capsys.readouterr().out

    text.write_text("utt1 der hund\n\nutt3 die katze\n", encoding="utf-8")
    assert main(common) == 1
    assert f"{text}:2: no key at the start of the line" in capsys.readouterr().err
    assert main(["train-lm", "--text", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert f"{tmp_path / 'missing'}: cannot read" in capsys.readouterr().err
