"""`metarecipe make-demo-corpus OUT`: the built-in multilingual corpus in Common Voice layout."""

from __future__ import annotations

import argparse
import time

from metarecipe.data.demo_corpus import LANGUAGES, make_demo_corpus


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="generate the demo corpus (espeak-ng + Debian fortunes)",
                       description="Writes a Common Voice-layout release of speech synthesised offline by espeak-ng "
                                   "from the Debian fortunes of each language, with many speakers and noise. "
                                   "Deterministic for a seed.")
    p.add_argument("out_dir")
    p.add_argument("--langs", nargs="+", default=list(LANGUAGES), choices=sorted(LANGUAGES))
    p.add_argument("--minutes", type=float, default=30.0, help="minutes of speech per language (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nj", type=int, default=2, help="languages generated in parallel (default 2)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    counts = make_demo_corpus(args.out_dir, args.langs, args.minutes, args.seed, args.nj)
    for lang, per_split in counts.items():
        print(f"{lang}: " + ", ".join(f"{split} {n} clips" for split, n in per_split.items()))
    print(f"{args.out_dir}: {len(counts)} languages in {time.perf_counter() - start:.0f} s")
    return 0
