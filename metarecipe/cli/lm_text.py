"""`metarecipe lm-text OUT`: language model training text with every dev and test sentence left out."""

from __future__ import annotations

import argparse
from pathlib import Path

from metarecipe.errors import InputError
from metarecipe.io.atomic import write_atomic
from metarecipe.io.kaldi_tables import read_table
from metarecipe.text.normalize import normalize


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="make LM training text, leaving out evaluation sentences",
                       description="Collects sentences (normalised for --lang) from the demo corpus' source text "
                                   "(--demo: the language's Debian fortunes) and/or Kaldi text files, drops every "
                                   "sentence that occurs in an --exclude text (dev and test transcripts) and "
                                   "duplicates, and writes one sentence a line to OUT.")
    p.add_argument("out")
    p.add_argument("--lang", required=True, help="language code, for normalisation (and --demo)")
    p.add_argument("--demo", action="store_true", help="the demo corpus' sentences of --lang (its fortunes)")
    p.add_argument("--kaldi-text", nargs="*", default=[], help="Kaldi text files, e.g. data/eo/train/text")
    p.add_argument("--exclude", nargs="*", default=[], help="Kaldi text files whose sentences must not appear")


def run(args: argparse.Namespace) -> int:
    sentences = []
    if args.demo:
        from metarecipe.data.demo_corpus import LANGUAGES, require_tools
        from metarecipe.data.demo_corpus import sentences as demo_sentences

        if args.lang not in LANGUAGES:
            raise InputError(f"--demo: the demo corpus has no language {args.lang!r} (it has "
                             f"{', '.join(sorted(LANGUAGES))})")
        require_tools([args.lang])
        sentences += demo_sentences(args.lang)
    for path in args.kaldi_text:
        sentences += read_table(path, need_value=False).values()
    evaluation = [s for path in args.exclude for s in read_table(path, need_value=False).values()]
    excluded = {normalize(s, args.lang) for s in evaluation}
    kept, seen = [], set()
    for sentence in sentences:
        line = normalize(sentence, args.lang)
        if line and line not in excluded and line not in seen:
            seen.add(line)
            kept.append(line)
    if not kept:
        raise InputError(f"no sentences left for {args.lang} after normalisation and the exclusions")
    write_atomic(Path(args.out), "".join(f"{line}\n" for line in kept).encode("utf-8"))
    print(f"{args.out}: {len(kept)} sentences ({len(excluded)} evaluation sentences excluded)")
    return 0
