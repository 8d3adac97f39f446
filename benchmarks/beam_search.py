"""CTC beam search with a word n-gram LM: ours beside flashlight-text and pyctcdecode, speed and accuracy.

Timing part (default): Italian sentences of 8-20 words from the fortune files (/usr/share/games/fortunes/it),
normalised to a-z, apostrophe and single spaces (accents stripped); a word 3-gram (NGramLM.train, written as
ARPA) on all but 200 held-out sentences, chosen so that all their words are in the LM (the test is of the search,
not of the vocabulary's coverage). Per held-out sentence, seeded synthetic emissions over 30 tokens (blank,
space, <unk>, apostrophe, a-z: the 29 characters and the token table's <unk>, never boosted): an alignment of
its characters (1-2 frames each, blanks spread between, 225-275 frames), per frame N(0, 2) logits plus 12 on
the aligned token; 6% of the letters are confused (another letter takes the boost, the right one keeps
12 - U(0, 10)), which the LM can undo; then log_softmax.

Decoders, and how the options of a setting are mapped to each (ours: metarecipe.kernels.beam_search, ln units):

- beam: ours `beam`, flashlight `beam_size`, pyctcdecode `beam_width`;
- beam threshold T = 25 (ln): ours and flashlight `beam_threshold=T`, pyctcdecode `beam_prune_logp=-T`;
- token pruning, each peer with its own rule, set to try about as many tokens (the footer prints the mean number
  of non-blank tokens each tries per frame on these emissions): ours the best `token_beam=K` (7) non-blank
  tokens, `token_threshold=-inf` (off); flashlight `beam_size_token=K+1`, its top K+1 counting the blank (which
  is among them on every blank frame); pyctcdecode `token_min_logp=-10` (no top-K in it);
- LM weight w = 1 (multiplies ln P): ours `lm_weight=w`; flashlight `lm_weight = w ln 10`, since its KenLM
  wrapper returns KenLM's log10 BaseScore unconverted; pyctcdecode `alpha=w`, since it multiplies KenLM's log10
  score by ln 10 itself (LOG_BASE_CHANGE_FACTOR);
- word insertion b = 1 per word: ours `insertion_bonus=b` (0 without an LM, where ours would add it per token),
  flashlight `word_score=b`, pyctcdecode `beta=b`;
- vocabulary: flashlight's LexiconDecoder (`is_token_lm=False`, `unk_score=-inf`, `sil_score=0`,
  `log_add=True`: hypotheses reaching the same state are summed, as in a prefix search) over the LM's words
  spelled in characters, each followed by the space token as in torchaudio's lexicons (with --flashlight-lexicon
  plain, words end at their last letter: flashlight then joins words without a space and is slower and worse),
  in a Trie smeared with SmearingMode.MAX, the ARPA file through KenLM(path, word_dict). Its equivalent is
  `lexicon_only=True`: "ours"; "ours-open" is ours open-vocabulary (a word outside the LM scored as <unk>).
  pyctcdecode is open-vocabulary too: a word outside the unigrams gets KenLM's <unk> score plus
  `unk_score_offset` (-10, log10, times alpha), a partial word outside the unigram prefix trie that offset
  unweighted. Without an LM: flashlight's LexiconFreeDecoder with ZeroLM, pyctcdecode without kenlm_model_path;
- blank skipping: only ours has it; "ours" and "ours-open" run without (`blank_skip=1`), "ours-skip" is "ours"
  with `blank_skip=0.999` (--blank-skip), ours' default.

Threads: ours decodes the whole set in one call, parallel over utterances (torch.set_num_threads). flashlight
decodes one utterance a call; its Python bindings hold the GIL, so with 2 threads two forked worker processes
each decode half of the set. pyctcdecode runs in its own venv (numpy<2, benchmarks/pyctcdecode_driver.py), one
process, one thread, on the first max(20, 1600 / beam) utterances (the utts column). Times: the median over
--repeats passes of the whole set (pyctcdecode: one pass after a warm-up call), per utterance. WER against the
reference sentences; empty: utterances decoded to no text (no hypothesis left, or an empty one); =fl, =pyctc:
the fraction of utterances whose best text equals flashlight's or pyctcdecode's at the same LM and beam (on
pyctcdecode's prefix of the set); fl/ours, pyctc/ours: their time per utterance over ours.

Real-data part (--model, --data and --lm or --lm-text): each data directory's log-probabilities from the model,
computed once, then each decoder with the word LM at beam 32 (--beams) with --lm-weight and --word-bonus.

    python benchmarks/beam_search.py                      # table (about 5 minutes)
    python benchmarks/beam_search.py --quick              # smoke run
    python benchmarks/beam_search.py --json out.json
    cut -d' ' -f2- data/it/train/text > lm.txt
    python benchmarks/beam_search.py --model exp/model.pt --data data/it/dev --lm-text lm.txt
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import re
import statistics
import string
import subprocess
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metarecipe.decode.lm_tables import lm_tables
from metarecipe.decode.scoring import error_rate
from metarecipe.kernels.beam_search import BeamSearchOptions, ctc_beam_search
from metarecipe.text.lm import NGramLM, text_units
from metarecipe.text.normalize import normalize
from metarecipe.text.tokens import BLANK, SPACE, UNK, TokenTable

FORTUNES = Path("/usr/share/games/fortunes/it")
SYMBOLS = [BLANK, SPACE, UNK, "'", *string.ascii_lowercase]
PYCTC_VENV = Path("/tmp/pyctc_venv/bin/python")
DRIVER = Path(__file__).with_name("pyctcdecode_driver.py")
LN10 = math.log(10.0)
SPECIAL_WORDS = {"<s>", "</s>", "<unk>"}


def plain_latin(line: str) -> str:
    """The line normalised (metarecipe.text.normalize), accents stripped, only a-z and inner apostrophes kept."""
    text = normalize(line, "it") or ""
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    text = re.sub(r"[^a-z']+", " ", text)
    return " ".join(word.strip("'") for word in text.split() if word.strip("'"))


def fortune_sentences(root: Path, min_words: int = 8, max_words: int = 20) -> list[str]:
    """Distinct sentences of min_words..max_words words from the fortune files (attributions left out)."""
    sentences = {}
    for path in sorted(p for p in root.iterdir() if p.is_file() and not p.is_symlink() and not p.suffix):
        text = path.read_text(encoding="utf-8", errors="replace")
        for fortune in re.split(r"^%\s*$", text, flags=re.MULTILINE):
            body = " ".join(line for line in fortune.splitlines() if not line.strip().startswith("--"))
            for piece in re.split(r"[.!?;:]+", body):
                sentence = plain_latin(piece)
                if min_words <= len(sentence.split()) <= max_words:
                    sentences.setdefault(sentence, None)
    return list(sentences)


def alignment(ids: list[int], frames: int, blank: int, rng: np.random.Generator) -> np.ndarray:
    """Per frame the aligned token: each token 1-2 frames, the remaining frames as blanks spread over the gaps
    (at least one between repeated tokens)."""
    lengths = rng.integers(1, 3, len(ids))
    gaps = np.zeros(len(ids) + 1, np.int64)
    gaps[1:-1] = [int(a == b) for a, b in zip(ids, ids[1:], strict=False)]
    spare = max(frames - int(lengths.sum() + gaps.sum()), 0)
    gaps += rng.multinomial(spare, np.full(len(gaps), 1.0 / len(gaps)))
    path = [blank] * int(gaps[0])
    for token, length, gap in zip(ids, lengths, gaps[1:], strict=True):
        path += [token] * int(length) + [blank] * int(gap)
    return np.array(path, np.int64)


def synthetic_log_probs(ids: list[int], frames: int, vocab: int, letters: list[int], rng: np.random.Generator,
                        noise: float, boost: float, confusion: float, margin: float) -> torch.Tensor:
    """(T, V) log-probabilities: N(0, noise) logits plus `boost` on the aligned token. With probability
    `confusion` a letter is confused: another letter takes the boost and the right one keeps boost - U(0, margin),
    for all the frames of that letter (the acoustic cost the LM must outweigh to undo it)."""
    path = alignment(ids, frames, 0, rng)
    logits = rng.normal(0.0, noise, (len(path), vocab))
    logits[np.arange(len(path)), path] += boost
    edges = np.flatnonzero(np.diff(path)) + 1
    for start, end in zip(np.concatenate([[0], edges]), np.concatenate([edges, [len(path)]]), strict=True):
        token = int(path[start])
        if token in letters and rng.random() < confusion:
            logits[start:end, token] -= rng.uniform(0.0, margin)
            logits[start:end, rng.choice([c for c in letters if c != token])] += boost
    return torch.from_numpy(logits).float().log_softmax(-1)


def split_sentences(sentences: list[str], held_out: int, seed: int) -> tuple[list[str], list[str]]:
    """(LM training text, held-out sentences) at random, the held-out ones chosen with every word also in the
    training text (no out-of-vocabulary words: the test is of the search, not of the lexicon's coverage)."""
    counts: dict[str, int] = {}
    for sentence in sentences:
        for word in sentence.split():
            counts[word] = counts.get(word, 0) + 1
    test, train = [], []
    for index in np.random.default_rng(seed).permutation(len(sentences)):
        words = sentences[index].split()
        needed = {w: words.count(w) for w in words}
        if len(test) < held_out and all(counts[w] > n for w, n in needed.items()):
            for w, n in needed.items():
                counts[w] -= n
            test.append(sentences[index])
        else:
            train.append(sentences[index])
    return train, test


@dataclass
class Setting:
    """One decoding configuration shared by the decoders (ln units; the module docstring maps it to each)."""

    beam: int
    use_lm: bool
    threads: int = 1
    beam_threshold: float = 25.0
    token_beam: int = 7
    token_min_logp: float = -10.0
    lm_weight: float = 1.0
    word_bonus: float = 1.0
    blank_skip: float = 0.999

    def ours(self, lexicon_only: bool, skip_blanks: bool) -> BeamSearchOptions:
        return BeamSearchOptions(beam=self.beam, beam_threshold=self.beam_threshold, token_threshold=-math.inf,
                                 token_beam=self.token_beam, blank_skip=self.blank_skip if skip_blanks else 1.0,
                                 lm_weight=self.lm_weight if self.use_lm else 0.0,
                                 insertion_bonus=self.word_bonus if self.use_lm else 0.0,
                                 lexicon_only=lexicon_only and self.use_lm)


@dataclass
class Run:
    """One decoder's pass over a set (or a prefix of it): the best texts and the median seconds of the pass."""

    texts: list[str]
    seconds: float

    @property
    def ms_per_utt(self) -> float:
        return 1e3 * self.seconds / len(self.texts)


# our variants: name -> (lexicon_only, blank skipping); without an LM ours-open would be ours and is left out
OURS = {"ours": (True, False), "ours-open": (False, False), "ours-skip": (True, True)}
DECODERS = (*OURS, "flashlight", "pyctcdecode")


def timed(fn, repeats: int):
    """(the last result of fn, the median seconds of `repeats` calls)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def best_text(tokens: TokenTable, labels) -> str:
    return " ".join(tokens.decode(labels).split())


def run_ours(log_probs: list[torch.Tensor], tokens: TokenTable, tables, options: BeamSearchOptions, threads: int,
             repeats: int) -> Run:
    """Our C++ search over the whole set in one call, on `threads` threads."""
    scores = torch.nn.utils.rnn.pad_sequence(log_probs, batch_first=True)
    lengths = torch.tensor([lp.shape[0] for lp in log_probs])
    torch.set_num_threads(threads)
    found, seconds = timed(lambda: ctc_beam_search(scores, lengths, options, tables, tokens.blank, tokens.ids[SPACE],
                                                   backend="cpp"), repeats)
    return Run([best_text(tokens, nbest[0].tokens) if nbest else "" for nbest in found], seconds)


def lexicon_words(lm: NGramLM, tokens: TokenTable) -> list[str]:
    """The LM's words spellable in the token table (the words our lexicon trie holds too)."""
    return [w for w in lm.vocab if w not in SPECIAL_WORDS and tokens.ids[UNK] not in tokens.encode(w)]


class Flashlight:
    """flashlight-text's decoders: LexiconDecoder over a lexicon of the LM's words with KenLM (loaded once), or
    LexiconFreeDecoder with ZeroLM without an LM."""

    def __init__(self, tokens: TokenTable, arpa: Path | None, words: list[str], trailing_space: bool = True):
        from flashlight.lib.text import decoder as fl
        from flashlight.lib.text.dictionary import Dictionary

        self.tokens = tokens
        self.lm = self.trie = None
        if arpa is None:
            return
        word_dict = Dictionary([UNK, *words])  # index 0: <unk>, the decoder's unk_token_idx
        word_dict.set_default_index(0)
        self.lm = fl.KenLM(str(arpa), word_dict)
        self.trie = fl.Trie(len(tokens), tokens.ids[SPACE])
        start = self.lm.start(False)
        for index, word in enumerate(words, start=1):
            spelling = tokens.encode(word) + ([tokens.ids[SPACE]] if trailing_space else [])
            self.trie.insert(spelling, index, self.lm.score(start, index)[1])
        self.trie.smear(fl.SmearingMode.MAX)

    def decoder(self, setting: Setting):
        """A decoder for one setting (decoders are stateful: one per worker)."""
        from flashlight.lib.text import decoder as fl

        space, blank, s = self.tokens.ids[SPACE], self.tokens.blank, setting
        common = {"beam_size": s.beam, "beam_size_token": s.token_beam + 1, "beam_threshold": s.beam_threshold,
                  "sil_score": 0.0, "log_add": True, "criterion_type": fl.CriterionType.CTC}
        if not s.use_lm:
            options = fl.LexiconFreeDecoderOptions(lm_weight=0.0, **common)
            return fl.LexiconFreeDecoder(options, fl.ZeroLM(), space, blank, [])
        if self.lm is None:
            raise ValueError("flashlight: a setting with an LM needs the ARPA file")
        options = fl.LexiconDecoderOptions(lm_weight=s.lm_weight * LN10, word_score=s.word_bonus,
                                           unk_score=-math.inf, **common)
        return fl.LexiconDecoder(options, self.trie, self.lm, space, blank, 0, [], False)

    def decode(self, decoder, log_probs: list[torch.Tensor]) -> list[str]:
        """Best texts, one decode call per utterance: the frame path with repeats merged and blanks dropped."""
        texts = []
        for scores in log_probs:
            results = decoder.decode(scores.data_ptr(), scores.shape[0], scores.shape[1])
            path = results[0].tokens if results else []
            labels = [t for i, t in enumerate(path) if (i == 0 or t != path[i - 1]) and t != self.tokens.blank]
            texts.append(best_text(self.tokens, labels))
        return texts


_WORKER: dict = {}


def _flashlight_worker_start(flashlight: Flashlight, setting: Setting, log_probs: list[torch.Tensor]) -> None:
    _WORKER.update(flashlight=flashlight, decoder=flashlight.decoder(setting), log_probs=log_probs)


def _flashlight_worker_decode(indices: list[int]) -> list[str]:
    return _WORKER["flashlight"].decode(_WORKER["decoder"], [_WORKER["log_probs"][i] for i in indices])


def run_flashlight(flashlight: Flashlight, log_probs: list[torch.Tensor], setting: Setting, repeats: int) -> Run:
    """flashlight over the set: a loop in this process on 1 thread, else that many forked worker processes
    (its bindings hold the GIL during decode, so threads would not run in parallel), each a share of the set."""
    log_probs = [lp.contiguous() for lp in log_probs]
    if setting.threads == 1:
        decoder = flashlight.decoder(setting)
        return Run(*timed(lambda: flashlight.decode(decoder, log_probs), repeats))
    shares = [part.tolist() for part in np.array_split(np.arange(len(log_probs)), setting.threads)]
    context = multiprocessing.get_context("fork")
    with context.Pool(setting.threads, _flashlight_worker_start, (flashlight, setting, log_probs)) as pool:
        parts, seconds = timed(lambda: pool.map(_flashlight_worker_decode, shares, chunksize=1), repeats)
    return Run([text for part in parts for text in part], seconds)


def pyctcdecode_labels(tokens: TokenTable) -> list[str]:
    """pyctcdecode's labels: "" the blank, " " the word boundary, the rest as in the token table."""
    return ["" if s == BLANK else " " if s == SPACE else s for s in tokens.symbols]


def run_pyctcdecode(python: Path, log_probs: list[torch.Tensor], tokens: TokenTable, arpa: Path | None,
                    settings: list[Setting], utterances: list[int], work: Path) -> dict[tuple[bool, int], Run | str]:
    """pyctcdecode in its venv (benchmarks/pyctcdecode_driver.py), once over each setting's first `utterances`:
    per (use_lm, beam) its Run, or why it did not run."""
    np.savez(work / "log_probs.npz", *[lp.numpy() for lp in log_probs])
    base = settings[0]
    config = {"log_probs": str(work / "log_probs.npz"), "labels": pyctcdecode_labels(tokens),
              "arpa": str(arpa) if arpa else None, "alpha": base.lm_weight, "beta": base.word_bonus,
              "beam_prune_logp": -base.beam_threshold, "token_min_logp": base.token_min_logp, "repeats": 1,
              "runs": [{"beam": s.beam, "lm": s.use_lm, "utterances": n}
                       for s, n in zip(settings, utterances, strict=True)]}
    (work / "pyctcdecode.json").write_text(json.dumps(config))
    done = subprocess.run([str(python), str(DRIVER), str(work / "pyctcdecode.json")], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        print(f"pyctcdecode failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {(s.use_lm, s.beam): error for s in settings}
    return {(run["lm"], run["beam"]): run["error"] if "error" in run else
            Run(run["texts"], run["ms_per_utterance"] * run["utterances"] / 1e3)
            for run in json.loads(done.stdout)["runs"]}


def agreement(run: Run, other: Run | None) -> float | None:
    """The fraction of utterances with equal texts (over the shorter: pyctcdecode may decode a prefix of the set)."""
    if other is None or other is run:
        return None
    return float(np.mean([a == b for a, b in zip(run.texts, other.texts, strict=False)]))


def word_error_rate(refs: list[str], texts: list[str]) -> float:
    return error_rate([(ref.split(), hyp.split()) for ref, hyp in zip(refs, texts, strict=False)]).rate


def run_all(log_probs: list[torch.Tensor], tokens: TokenTable, lm: NGramLM | None, arpa: Path | None,
            settings: list[Setting], args: argparse.Namespace, work: Path) -> dict[tuple, Run | str]:
    """Every decoder at every setting: (decoder, use_lm, beam, threads) -> its Run, or why it did not run."""
    tables = lm_tables(lm, tokens, "word") if lm is not None else None
    if tables is not None:
        tables.compiled()  # the n-gram hash table, built once, outside the timing
    flashlight = Flashlight(tokens, arpa, lexicon_words(lm, tokens) if lm else [], args.flashlight_lexicon == "space")
    runs: dict[tuple, Run | str] = {}
    for s in settings:
        print(f"ours and flashlight: beam {s.beam}, {'word LM' if s.use_lm else 'no LM'}, {s.threads} thread(s)",
              file=sys.stderr, flush=True)
        key = (s.use_lm, s.beam, s.threads)
        for name, (lexicon_only, skip_blanks) in OURS.items():
            if s.use_lm or name != "ours-open":
                runs[(name, *key)] = run_ours(log_probs, tokens, tables if s.use_lm else None,
                                              s.ours(lexicon_only, skip_blanks), s.threads, args.repeats)
        runs[("flashlight", *key)] = run_flashlight(flashlight, log_probs, s, args.repeats)
    single = [s for s in settings if s.threads == 1]
    if args.pyctcdecode_python is not None and single:
        print("pyctcdecode", file=sys.stderr, flush=True)
        counts = [min(len(log_probs), max(20, args.pyctc_budget // s.beam)) for s in single]
        found = run_pyctcdecode(args.pyctcdecode_python, log_probs, tokens, arpa, single, counts, work)
        runs.update({("pyctcdecode", use_lm, beam, 1): run for (use_lm, beam), run in found.items()})
    return runs


def measures(run: Run, refs: list[str], flashlight: Run | None, pyctc: Run | None, ours: bool) -> dict:
    """A run's time, WER, empty outputs, agreement with the peers and (ours) the peers' time over ours."""
    found = {"utterances": len(run.texts), "ms_per_utt": run.ms_per_utt, "wer": word_error_rate(refs, run.texts),
             "empty": sum(not text for text in run.texts), "agree_flashlight": agreement(run, flashlight),
             "agree_pyctcdecode": agreement(run, pyctc)}
    for name, peer in (("flashlight", flashlight), ("pyctcdecode", pyctc)):
        if ours and peer is not None:
            found[f"{name}_over_ours"] = peer.ms_per_utt / run.ms_per_utt
    return found


def records_of(runs: dict[tuple, Run | str], refs: list[str], settings: list[Setting], part: str) -> list[dict]:
    """One record per decoder and setting, in table order."""
    records = []
    for s in settings:
        key = (s.use_lm, s.beam, s.threads)
        peers = [runs.get((name, *key)) for name in ("flashlight", "pyctcdecode")]
        flashlight, pyctc = (peer if isinstance(peer, Run) else None for peer in peers)
        for name in DECODERS:
            run = runs.get((name, *key))
            if run is None:
                continue
            record = {"part": part, "decoder": name, "lm": s.use_lm, "beam": s.beam, "threads": s.threads}
            if isinstance(run, str):
                records.append({**record, "error": run})
            else:
                records.append({**record, **measures(run, refs, flashlight, pyctc, name in OURS)})
    return records


def tokens_tried(log_probs: list[torch.Tensor], setting: Setting, blank: int) -> dict[str, float]:
    """Mean non-blank tokens tried per frame: ours (top token_beam), flashlight (top token_beam + 1 counting the
    blank), pyctcdecode (at or above token_min_logp, and the frame's best)."""
    scores = torch.cat(log_probs)
    top = scores.topk(min(setting.token_beam + 1, scores.shape[1]), dim=-1).indices
    keep = scores >= setting.token_min_logp
    keep[torch.arange(len(scores)), scores.argmax(-1)] = True
    keep[:, blank] = False
    return {"ours": float(min(setting.token_beam, scores.shape[1] - 1)),
            "flashlight": float((top != blank).sum(-1).float().mean()),
            "pyctcdecode": float(keep.sum(-1).float().mean())}


def fmt(value: float | None, spec: str, width: int, suffix: str = "") -> str:
    """value right-aligned in width ("-" for none)."""
    text = "-" if value is None else f"{value:{spec}}{suffix}"
    return f"{text:>{width}}"


def print_table(records: list[dict]) -> None:
    header = (f"{'set':<16} {'LM':<5} {'beam':>4} {'thr':>3}  {'decoder':<11} {'utts':>4} {'ms/utt':>8} {'WER%':>6} "
              f"{'empty':>5} {'=fl':>5} {'=pyctc':>6} {'fl/ours':>8} {'pyctc/ours':>10}")
    print(header)
    print("-" * len(header))
    for r in records:
        start = (f"{r['part'][-16:]:<16} {'word3' if r['lm'] else 'none':<5} {r['beam']:>4} {r['threads']:>3}  "
                 f"{r['decoder']:<11}")
        if "error" in r:
            print(f"{start} n/a: {r['error']}")
            continue
        ratios = [r.get(f"{peer}_over_ours") for peer in ("flashlight", "pyctcdecode")]
        print(f"{start} {r['utterances']:>4} {r['ms_per_utt']:>8.2f} {r['wer']:>6.2f} {r['empty']:>5} "
              f"{fmt(r['agree_flashlight'], '.2f', 5)} {fmt(r['agree_pyctcdecode'], '.2f', 6)} "
              f"{fmt(ratios[0], '.2f', 8, 'x')} {fmt(ratios[1], '.1f', 10, 'x')}")


def print_verdict(records: list[dict], beam: int) -> None:
    """The issue's targets, on 1 thread with the word LM at `beam`: ours (lexicon-only, as flashlight) at least
    1.5x faster than flashlight and 20x faster than pyctcdecode."""
    for r in records:
        if r["decoder"] not in ("ours", "ours-skip") or (r["lm"], r["beam"], r["threads"]) != (True, beam, 1):
            continue
        for peer, target in (("flashlight", 1.5), ("pyctcdecode", 20.0)):
            ratio = r.get(f"{peer}_over_ours")
            verdict = "n/a" if ratio is None else f"{ratio:.2f}x, {'met' if ratio >= target else 'NOT met'}"
            print(f"{r['part']}: {r['decoder']} vs {peer} (1 thread, beam {beam}, word LM): {verdict} "
                  f"(target {target:g}x)")


def synthetic_set(args: argparse.Namespace, work: Path) -> tuple[TokenTable, NGramLM, Path, list, list[str]]:
    """(token table, the 3-gram, its ARPA file, log-probabilities, reference sentences) of the timing part."""
    train, test = split_sentences(fortune_sentences(FORTUNES), args.utterances or 200, args.seed)
    lm = NGramLM.train([s.split() for s in train], 3)
    arpa = work / "word3.arpa"
    lm.write_arpa(arpa)
    tokens = TokenTable(SYMBOLS)
    letters = [tokens.ids[c] for c in string.ascii_lowercase]
    rng = np.random.default_rng(args.seed)
    log_probs = [synthetic_log_probs(tokens.encode(s), int(rng.integers(225, 276)), len(tokens), letters, rng,
                                     args.noise, args.boost, args.confusion, args.margin) for s in test]
    oov = sum(w not in lm.word_ids for s in test for w in s.split())
    print(f"synthetic: {len(train)} LM sentences, {len(lm.vocab)} words, {len(test)} test sentences ({oov} OOV "
          f"words), {np.mean([lp.shape[0] for lp in log_probs]):.0f} frames on average", file=sys.stderr)
    return tokens, lm, arpa, log_probs, test


def synthetic(args: argparse.Namespace, work: Path) -> tuple[list[dict], dict[str, float]]:
    """The timing part: records of every decoder at every setting, and the tokens each tries per frame."""
    tokens, lm, arpa, log_probs, refs = synthetic_set(args, work)
    settings = [settings_of(args, beam, use_lm, threads) for use_lm in (False, True) for beam in args.beams
                for threads in args.threads]
    records = records_of(run_all(log_probs, tokens, lm, arpa, settings, args, work), refs, settings, "synthetic")
    return records, tokens_tried(log_probs, settings[0], tokens.blank)


def real_lm(args: argparse.Namespace, work: Path) -> tuple[NGramLM, Path]:
    """--lm ARPA as is, or a word 3-gram trained on --lm-text (one sentence a line) and written as ARPA."""
    if args.lm:
        return NGramLM.read_arpa(args.lm), Path(args.lm)
    lines = Path(args.lm_text).read_text(encoding="utf-8").splitlines()
    lm = NGramLM.train([text_units(line, "word") for line in lines if line.strip()], 3)
    lm.write_arpa(work / "lm.arpa")
    return lm, work / "lm.arpa"


def real_data(args: argparse.Namespace, work: Path) -> list[dict]:
    """Each data directory's log-probabilities from the model (computed once), then every decoder with the LM."""
    from metarecipe.decode.decoder import log_probs_of
    from metarecipe.io.model_files import load_model
    from metarecipe.io.pools import load_pools

    model, tokens, _ = load_model(args.model)
    lm, arpa = real_lm(args, work)
    records = []
    for data_dir in args.data:
        utts = [u for pool in load_pools([data_dir], tokens).values() for u in pool][:args.utterances]
        scores = log_probs_of(model, utts, args.batch)
        log_probs = [scores[u.utt].float() for u in utts]
        refs = [best_text(tokens, u.targets) for u in utts]
        settings = [settings_of(args, beam, True, args.threads[0]) for beam in args.beams]
        runs = run_all(log_probs, tokens, lm, arpa, settings, args, work)
        records += records_of(runs, refs, settings, "/".join(Path(data_dir).parts[-2:]))
    return records


def settings_of(args: argparse.Namespace, beam: int, use_lm: bool, threads: int) -> Setting:
    return Setting(beam=beam, use_lm=use_lm, threads=threads, beam_threshold=args.beam_threshold,
                   token_beam=args.token_beam, token_min_logp=args.token_min_logp, lm_weight=args.lm_weight,
                   word_bonus=args.word_bonus, blank_skip=args.blank_skip)


def pyctcdecode_python(path: str | None) -> Path | None:
    """The venv's python, or None with the commands that make it."""
    python = Path(path) if path else PYCTC_VENV
    if python.exists():
        return python
    print(f"pyctcdecode skipped: {python} not found. Make its venv (pyctcdecode needs numpy<2) with\n"
          f"    python -m venv /tmp/pyctc_venv && /tmp/pyctc_venv/bin/pip install 'numpy<2' pyctcdecode kenlm\n"
          f"and pass --pyctcdecode-python /tmp/pyctc_venv/bin/python", file=sys.stderr)
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beams", nargs="+", type=int, help="default 1 8 32 100 (--quick: 1 8; real data: 32)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the whole set (median); pyctcdecode 1")
    parser.add_argument("--utterances", type=int,
                        help="held-out sentences (default 200, --quick 40); with --data, at most this many per dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=2.0, help="std of the synthetic logits' noise")
    parser.add_argument("--boost", type=float, default=12.0, help="logit boost of the aligned token")
    parser.add_argument("--confusion", type=float, default=0.06, help="probability that a letter is confused")
    parser.add_argument("--margin", type=float, default=10.0,
                        help="a confused letter keeps boost - U(0, margin) on the right letter")
    parser.add_argument("--beam-threshold", type=float, default=25.0, help="ln; pyctcdecode's beam_prune_logp = -this")
    parser.add_argument("--token-beam", type=int, default=7,
                        help="non-blank tokens tried per frame: ours token_beam, flashlight beam_size_token - 1")
    parser.add_argument("--token-min-logp", type=float, default=-10.0, help="pyctcdecode's token_min_logp")
    parser.add_argument("--blank-skip", type=float, default=0.999,
                        help="ours-skip's blank_skip (ours and ours-open never skip, as the peers)")
    parser.add_argument("--lm-weight", type=float, default=1.0, help="multiplies ln P (see the mapping above)")
    parser.add_argument("--word-bonus", type=float, default=1.0, help="added per word")
    parser.add_argument("--flashlight-lexicon", choices=("space", "plain"), default="space",
                        help="flashlight's spellings end with the space token (default, as torchaudio) or not")
    parser.add_argument("--pyctcdecode-python", help=f"python of pyctcdecode's venv (default {PYCTC_VENV})")
    parser.add_argument("--pyctc-budget", type=int, default=1600,
                        help="pyctcdecode decodes max(20, this / beam) utterances of the set")
    parser.add_argument("--quick", action="store_true", help="40 utterances, beams 1 and 8")
    parser.add_argument("--json", metavar="PATH", help="also write the records as JSON")
    parser.add_argument("--model", help="real-data part: a model file (metarecipe.io.model_files)")
    parser.add_argument("--data", nargs="+", help="real-data part: data directories with features")
    parser.add_argument("--lm", help="real-data part: an ARPA word LM")
    parser.add_argument("--lm-text", help="real-data part: text (one sentence a line) for a word 3-gram")
    parser.add_argument("--batch", type=int, default=16, help="real-data part: utterances per acoustic batch")
    args = parser.parse_args(argv)
    if args.model and not (args.data and (args.lm or args.lm_text)):
        parser.error("--model needs --data and --lm or --lm-text")
    if args.quick:
        args.utterances = args.utterances or 40
    args.beams = args.beams or ([32] if args.model else [1, 8] if args.quick else [1, 8, 32, 100])
    args.pyctcdecode_python = pyctcdecode_python(args.pyctcdecode_python)
    tried = None
    with tempfile.TemporaryDirectory(prefix="beam_search_bench_") as tmp:
        if args.model:
            records = real_data(args, Path(tmp))
        else:
            records, tried = synthetic(args, Path(tmp))
    print_table(records)
    print_verdict(records, 32 if 32 in args.beams else max(args.beams))
    if tried:
        print("non-blank tokens tried per frame: " + ", ".join(f"{k} {v:.2f}" for k, v in tried.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                       "tokens_tried": tried, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
