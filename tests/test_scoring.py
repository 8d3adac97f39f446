"""Greedy decoding, and scoring against brute force, against jiwer 4 and in Kaldi's file formats."""

import itertools
import json
import random
from pathlib import Path

import pytest
import torch

from metarecipe.cli.main import main
from metarecipe.decode import edit_counts, error_rate
from metarecipe.decode.alignment import align
from metarecipe.decode.greedy import greedy_decode
from metarecipe.decode.scoring import group_table_lines, per_utt_lines, score, summary_lines, write_per_utt


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


@pytest.fixture
def jiwer():
    return pytest.importorskip("jiwer")


def assert_counts_equal_jiwers(jiwer, refs, hyps, unit):
    """Per pair and over the corpus: sub, ins, del, hits and the rate of score() against jiwer's."""
    process = jiwer.process_words if unit == "word" else jiwer.process_characters
    report = score(dict(enumerate(refs)), dict(enumerate(hyps)), unit)
    for k, (ref, hyp) in enumerate(zip(refs, hyps, strict=True)):
        ours, theirs = report.utts[k].counts, process(ref, hyp)
        assert (ours.sub, ours.ins, ours.dels) == (theirs.substitutions, theirs.insertions, theirs.deletions), \
            (ref, hyp)
        assert ours.ref_len - ours.sub - ours.dels == theirs.hits
        rate = theirs.wer if unit == "word" else theirs.cer
        if ours.ref_len:
            assert ours.rate == pytest.approx(100 * rate)
        else:  # jiwer's "rate" against an empty reference is the insertion count
            assert rate == ours.ins and ours.rate == (float("inf") if ours.ins else 0.0)
    corpus = process(list(refs), list(hyps))
    total = report.total
    assert (total.sub, total.ins, total.dels) == (corpus.substitutions, corpus.insertions, corpus.deletions)
    if total.ref_len:
        assert total.rate == pytest.approx(100 * (corpus.wer if unit == "word" else corpus.cer))


def random_text(rng, alphabet, joiner):
    return joiner.join(rng.choice(alphabet) for _ in range(rng.randrange(13)))


def test_counts_equal_jiwers_on_random_words_and_characters(jiwer):
    rng = random.Random(4)
    words = ["a", "b", "cc", "d"]
    refs, hyps = ([random_text(rng, words, " ") for _ in range(2000)] for _ in range(2))
    assert_counts_equal_jiwers(jiwer, refs, hyps, "word")
    # characters, spaces included; runs of spaces collapse to one (our tokens, and jiwer's with single spaces)
    refs, hyps = ([" ".join(random_text(rng, "ab c", "").split()) for _ in range(2000)] for _ in range(2))
    assert_counts_equal_jiwers(jiwer, refs, hyps, "char")


@pytest.mark.parametrize("ref, hyp, sub_ins_del", [
    ("a b", "b a", (0, 1, 1)),  # not two substitutions
    ("a b", "b c", (2, 0, 0)),
    ("a a b", "b a a", (0, 1, 1)),
    ("a b b a", "b b a a", (2, 0, 0)),  # the common suffix is matched first: without that, (0, 1, 1)
    ("x a y", "z a a w", (2, 1, 0)),
    ("a b c", "", (0, 0, 3)),
    ("", "a b", (0, 2, 0)),
    ("", "", (0, 0, 0)),
])
def test_ties_are_broken_as_jiwer_breaks_them(jiwer, ref, hyp, sub_ins_del):
    counts = edit_counts(ref.split(), hyp.split())
    assert (counts.sub, counts.ins, counts.dels) == sub_ins_del
    assert_counts_equal_jiwers(jiwer, [ref], [hyp], "word")
    assert_counts_equal_jiwers(jiwer, [ref.replace(" ", "")], [hyp.replace(" ", "")], "char")


def fortune_lines(path, count, rng):
    """`count` random sentences of a UTF-8 fortune file, whitespace collapsed."""
    lines = [" ".join(line.split()) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return rng.sample([line for line in lines if line and line != "%" and not line.startswith("--")], count)


def perturbed(items, vocabulary, rng, rate):
    """items with random deletions, insertions and substitutions (drawn from vocabulary), each at `rate`."""
    out = []
    for item in items:
        if rng.random() < rate:
            out.append(rng.choice(vocabulary))
        if rng.random() >= rate:
            out.append(item if rng.random() >= rate else rng.choice(vocabulary))
    return out


def test_counts_equal_jiwers_on_perturbed_german_and_esperanto_sentences(jiwer):
    files = ["/usr/share/games/fortunes/de/sprichworte.u8", "/usr/share/games/fortunes/eo/proverbaro.u8"]
    if not all(Path(f).exists() for f in files):
        pytest.skip("fortune files (fortunes-de, fortunes-eo) not installed")
    rng = random.Random(7)
    refs = [line for f in files for line in fortune_lines(f, 100, rng)]
    words = sorted({w for ref in refs for w in ref.split()})
    chars = sorted(set("".join(refs)))
    word_hyps = [" ".join(perturbed(ref.split(), words, rng, 0.15)) for ref in refs]
    char_hyps = [" ".join("".join(perturbed(ref, chars, rng, 0.1)).split()) for ref in refs]
    assert_counts_equal_jiwers(jiwer, refs, word_hyps, "word")
    assert_counts_equal_jiwers(jiwer, refs, char_hyps, "char")


def test_alignment_reproduces_both_sequences():
    rng = random.Random(2)
    for _ in range(500):
        ref, hyp = ([rng.choice("abc") for _ in range(rng.randrange(10))] for _ in range(2))
        pairs = align(ref, hyp)
        assert [r for r, _, op in pairs if op != "I"] == ref and [h for _, h, op in pairs if op != "D"] == hyp
        for r, h, op in pairs:
            assert op == ("I" if r is None else "D" if h is None else "C" if r == h else "S")
        counts = edit_counts(ref, hyp)
        assert [op for *_, op in pairs].count("S") == counts.sub and counts.errors == levenshtein(ref, hyp)


REFS = {"u1": "the cat sat", "u2": "a b", "u3": "x", "u4": "ok"}
HYPS = {"u1": "the bat sat down", "u2": "b a", "u4": "ok"}
UTT2SPK = {"u1": "alice", "u2": "bob", "u3": "bob", "u4": "alice"}


def test_kaldi_summary_and_per_utterance_formats():
    report = score(REFS, HYPS, mode="all", groups={"spk": UTT2SPK})
    assert summary_lines(report) == ["%WER 71.43 [ 5 / 7, 2 ins, 2 del, 1 sub ]", "%SER 75.00 [ 3 / 4 ]",
                                     "Scored 4 sentences, 1 not present in hyp."]
    assert per_utt_lines(report) == [
        "u1 ref  the  cat  sat   ***", "u1 hyp  the  bat  sat  down", "u1 op    C    S    C     I ",
        "u1 #csid 2 1 1 0",
        "u2 ref  ***  a   b ", "u2 hyp   b   a  ***", "u2 op    I   C   D ", "u2 #csid 1 0 1 1",
        "u3 ref   x ", "u3 hyp  ***", "u3 op    D ", "u3 #csid 0 0 0 1",
        "u4 ref  ok", "u4 hyp  ok", "u4 op    C", "u4 #csid 1 0 0 0"]
    assert group_table_lines(report, "spk") == ["# spk  utts  words  errors    %WER  sub  ins  del",
                                                "alice     2      4       2   50.00    1    1    0",
                                                "bob       2      3       3  100.00    0    1    2"]
    chars = score({"u": "ab c"}, {"u": "abc"}, unit="char")
    assert per_utt_lines(chars)[:3] == ["u ref  a  b  <space>  c", "u hyp  a  b    ***    c",
                                        "u op   C  C     D     C"]
    assert summary_lines(chars)[0] == "%CER 25.00 [ 1 / 4, 0 ins, 1 del, 0 sub ]"


def test_group_breakdowns_sum_to_the_total():
    rng = random.Random(3)
    refs = {f"u{k:03d}": random_text(rng, ["a", "b", "c"], " ") for k in range(200)}
    hyps = {utt: random_text(rng, ["a", "b", "c"], " ") for utt in refs}
    groups = {"spk": {utt: f"s{rng.randrange(7)}" for utt in refs}, "lang": {utt: rng.choice("xy") for utt in refs}}
    for unit in ("word", "char"):
        report = score(refs, hyps, unit, groups)
        for name in groups:
            assert sum(report.groups[name].values(), start=type(report.total)()) == report.total
            assert sum(report.group_sizes[name].values()) == len(refs)


def test_modes_present_all_and_strict():
    present = score(REFS, HYPS)
    assert list(present.utts) == ["u1", "u2", "u4"] and present.missing == ["u3"]
    assert summary_lines(present)[2] == "Scored 3 sentences, 1 not present in hyp."
    everything = score(REFS, HYPS, mode="all")
    assert everything.total.dels == present.total.dels + 1 and everything.total.ref_len == 7
    with pytest.raises(ValueError, match="no hypothesis for utterance 'u3'"):
        score(REFS, HYPS, mode="strict")
    assert score(REFS, {**HYPS, "u3": "x"}, mode="strict").total.errors == 4


def write_table(path, table):
    path.write_text("".join(f"{key} {value}".rstrip() + "\n" for key, value in table.items()), encoding="utf-8")
    return str(path)


def test_cli_writes_every_score_file(tmp_path, capsys):
    ref = write_table(tmp_path / "text", {**REFS, "u5": "grüße"})
    hyp = write_table(tmp_path / "hyp", {**HYPS, "u3": "", "u5": "grüsse"})
    spk = write_table(tmp_path / "utt2spk", {**UTT2SPK, "u5": "bob"})
    lang = write_table(tmp_path / "utt2lang", {utt: "de" for utt in [*REFS, "u5"]})
    out = tmp_path / "scores"
    assert main(["score", "--ref", ref, "--hyp", hyp, "--utt2spk", spk, "--utt2lang", lang, "--out-dir",
                 str(out), "--tag", "method=fomaml", "--tag", "minutes=1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["%WER 75.00 [ 6 / 8, 2 ins, 2 del, 2 sub ]",
                                                    "%CER 50.00 [ 11 / 22, 6 ins, 1 del, 4 sub ]"]
    assert sorted(p.name for p in out.iterdir()) == ["cer", "per_lang_cer", "per_lang_wer", "per_spk_cer",
                                                     "per_spk_wer", "per_utt_cer", "per_utt_wer", "scores.json", "wer"]
    summary = json.loads((out / "scores.json").read_text())
    assert summary["tags"] == {"method": "fomaml", "minutes": "1"} and summary["utterances"] == 5
    assert summary["wer"]["rate"] == 75.0 and summary["cer"]["errors"] == 11 and summary["cer"]["ref_len"] == 22
    assert (out / "wer").read_text(encoding="utf-8").splitlines()[1:] == ["%SER 80.00 [ 4 / 5 ]",
                                                                        "Scored 5 sentences, 0 not present in hyp."]
    assert (out / "per_utt_cer").read_text(encoding="utf-8").splitlines()[-4:] == [
        "u5 ref  g  r  ü  ***  ß  e", "u5 hyp  g  r  ü   s   s  e", "u5 op   C  C  C   I   S  C", "u5 #csid 4 1 1 0"]
    assert (out / "per_lang_wer").read_text(encoding="utf-8").splitlines()[1].split() == \
        ["de", "5", "8", "6", "75.00", "2", "2", "2"]


def test_cli_names_the_file_and_line_of_bad_input(tmp_path, capsys):
    ref = write_table(tmp_path / "text", REFS)
    duplicated = tmp_path / "hyp"
    duplicated.write_text("u1 the cat\nu2 a\nu1 sat\n", encoding="utf-8")
    assert main(["score", "--ref", ref, "--hyp", str(duplicated)]) == 1
    assert capsys.readouterr().err == f"metarecipe score: {duplicated}:3: duplicate key 'u1' " \
                                      "(first on line 1)\n"
    duplicated.write_text("u1 the cat\n  u2 a\n", encoding="utf-8")
    assert main(["score", "--ref", ref, "--hyp", str(duplicated)]) == 1
    assert f"{duplicated}:2: no key at the start" in capsys.readouterr().err
    assert main(["score", "--ref", ref, "--hyp", str(tmp_path / "absent")]) == 1
    assert f"{tmp_path / 'absent'}: No such file or directory" in capsys.readouterr().err
    assert main(["score", "--ref", ref, "--hyp", str(tmp_path)]) == 1
    assert f"{tmp_path}: Is a directory" in capsys.readouterr().err
    assert main(["score", "--ref", ref, "--hyp", write_table(tmp_path / "h", HYPS), "--mode", "strict"]) == 1
    assert "no hypothesis for utterance 'u3'" in capsys.readouterr().err


def test_per_utt_file_is_replaced_whole(tmp_path):
    target = tmp_path / "per_utt_wer"
    target.write_text("stale\n" * 100)
    write_per_utt(score(REFS, HYPS), target)
    assert target.read_text().splitlines()[0] == "u1 ref  the  cat  sat   ***"
    assert [p.name for p in tmp_path.iterdir()] == ["per_utt_wer"]


def test_counts_equal_jiwers_on_decoded_demo_corpus_pairs(jiwer):
    """Real pairs: the demo corpus dev sets (eo, de, es, it) decoded greedily, by beam search and with a character
    LM (tests/data/decoded_demo_pairs.tsv), plus each reference against an empty hypothesis and the reverse."""
    lines = (Path(__file__).parent / "data" / "decoded_demo_pairs.tsv").read_text(encoding="utf-8").splitlines()
    pairs = [line.split("\t")[1:] for line in lines if not line.startswith("#")]
    assert len(pairs) == 365
    refs = [ref for ref, _ in pairs] + [ref for ref, _ in pairs[:20]] + ["" for _ in pairs[:20]]
    hyps = [hyp for _, hyp in pairs] + ["" for _ in pairs[:20]] + [hyp for _, hyp in pairs[:20]]
    for unit in ("word", "char"):
        assert_counts_equal_jiwers(jiwer, refs, hyps, unit)


def test_score_lm_text_and_compute_feats_run_without_loading_torch(tmp_path):
    """A recipe runs these light commands hundreds of times: only the command run is imported, and none of them
    pulls in torch (seconds per process)."""
    import subprocess
    import sys

    (tmp_path / "ref").write_text("u1 hola mundo\nu2 buenos dias\n")
    (tmp_path / "hyp").write_text("u1 hola mundo\nu2 buenas dias\n")
    code = ("import sys; from metarecipe.cli.main import main; "
            f"rc = main(['score', '--ref', {str(tmp_path / 'ref')!r}, '--hyp', {str(tmp_path / 'hyp')!r}, "
            f"'--out-dir', {str(tmp_path / 'out')!r}]); "
            "import metarecipe.cli.lm_text, metarecipe.cli.compute_feats; "
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout
    assert "%WER 25.00" in (tmp_path / "out" / "wer").read_text()
