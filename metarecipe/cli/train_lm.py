"""`metarecipe train-lm --text FILE --out LM.arpa`: a modified Kneser-Ney n-gram LM of words or characters."""

from __future__ import annotations

import argparse
import time

from metarecipe.errors import InputError
from metarecipe.io.kaldi_tables import read_table
from metarecipe.text.lm import BOS, DISCOUNT_FALLBACK, EOS, UNITS, NGramLM, text_units
from metarecipe.text.normalize import normalize

DEFAULT_ORDER = {"word": 3, "char": 6}


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="n-gram LM (modified Kneser-Ney) from text",
                       description="Trains an interpolated modified Kneser-Ney n-gram model, as KenLM's lmplz, "
                                   "on text with one sentence a line, and writes it as an ARPA file. With "
                                   "--unit char the units are characters, whitespace as <space>, as in the CTC "
                                   "token table. Prints the n-grams and discounts of each order, and the "
                                   "perplexity of --dev (tokens: units and </s>; OOVs scored as <unk>).")
    p.add_argument("--text", required=True, help="training text, one sentence a line")
    p.add_argument("--kaldi-text", action="store_true",
                   help="the first field of each line is an utterance id (a Kaldi data directory's text)")
    p.add_argument("--unit", choices=UNITS, default="word", help="model words or characters (default word)")
    p.add_argument("--order", type=int, help="n-gram order (default 3 for words, 6 for characters)")
    p.add_argument("--out", required=True, help="the ARPA file to write (gzipped when it ends in .gz)")
    p.add_argument("--dev", help="held-out text in the same format whose perplexity is printed")
    p.add_argument("--normalize", metavar="LANG",
                   help="normalise each line for language LANG first; lines that normalisation drops are left out")


def _text_lines(path: str):
    """(number, line) of a plain text file, decoded line by line; InputError naming the file (and line)."""
    try:
        lines = open(path, "rb")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from err
    with lines:
        for number, raw in enumerate(lines, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{path}:{number}: not UTF-8 ({err.reason} at byte {err.start})") from None


def read_sentences(path: str, unit: str, kaldi_text: bool = False, lang: str | None = None) -> tuple[list, int]:
    """The non-empty sentences of a text file (kaldi_text: the transcripts of a Kaldi `text` table) as lists of
    units, and the number of lines normalisation dropped; InputError naming the file (and line) of a problem."""
    sentences, dropped = [], 0
    lines = enumerate(read_table(path, need_value=False).values(), 1) if kaldi_text else _text_lines(path)
    for number, line in lines:
        if lang is not None:
            line = normalize(line, lang) if line.strip() else line
            if line is None:
                dropped += 1
                continue
        units = text_units(line, unit)
        if BOS in units or EOS in units:
            raise InputError(f"{path}:{number}: {BOS} and {EOS} are added around each sentence; the text may "
                             "not hold them")
        if units:
            sentences.append(units)
    return sentences, dropped


def _describe(path: str, sentences: list, dropped: int, lang: str | None) -> str:
    units = sum(map(len, sentences))
    return (f"{path}: {len(sentences)} sentences, {units} units"
            + (f", {dropped} lines dropped by normalisation ({lang})" if lang is not None else ""))


def run(args: argparse.Namespace) -> int:
    order = DEFAULT_ORDER[args.unit] if args.order is None else args.order
    if order < 1:
        raise InputError(f"--order must be at least 1, got {order}")
    sentences, dropped = read_sentences(args.text, args.unit, args.kaldi_text, args.normalize)
    if not sentences:
        raise InputError(f"{args.text}: no sentences to train on")
    dev = read_sentences(args.dev, args.unit, args.kaldi_text, args.normalize) if args.dev else None
    if dev is not None and not dev[0]:
        raise InputError(f"{args.dev}: no sentences to measure perplexity on")
    print(_describe(args.text, sentences, dropped, args.normalize))
    start = time.perf_counter()
    lm = NGramLM.train(sentences, order)
    lm.write_arpa(args.out)
    print(f"{args.out}: order {order} {args.unit} LM, vocabulary {len(lm.vocab)}, trained and written in "
          f"{time.perf_counter() - start:.1f} s")
    for n, (table, discounts) in enumerate(zip(lm.ngrams, lm.discounts, strict=True), 1):
        note = " (fallback: degenerate counts)" if discounts == DISCOUNT_FALLBACK else ""
        print(f"  ngram {n}={len(table)}  discounts {' '.join(f'{d:.3f}' for d in discounts)}{note}")
    if dev is not None:
        print(_describe(args.dev, *dev, args.normalize))
        ppl, tokens, oov = lm.perplexity(dev[0])
        print(f"{args.dev}: perplexity {ppl:.2f} over {tokens} tokens (units and </s>), {oov} OOV scored as <unk>")
    return 0
