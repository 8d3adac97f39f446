"""`metarecipe make-variation-corpus OUT --task-kind speaker|accent`: the built-in speaker and accent task corpora
(synthetic speech, espeak-ng) as Kaldi data dirs."""

from __future__ import annotations

import argparse
import time

from metarecipe.data.variation_corpus import KINDS, make_variation_corpus


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="generate a speaker or accent task corpus (espeak-ng + Debian fortunes)",
                       description="Writes OUT/audio/*.flac, Kaldi data dirs OUT/source/{train,dev} of the source "
                                   "tasks and OUT/targets/<target>/{train,test} per unseen speaker or accent, "
                                   "OUT/targets/list and OUT/corpus.json. The speech is synthesised offline by "
                                   "espeak-ng from the Debian fortunes, with noise. Deterministic for a seed.")
    p.add_argument("out_dir")
    p.add_argument("--task-kind", choices=KINDS, default="speaker",
                   help="speaker: es/it/de speakers are the tasks; accent: English accents (default speaker)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nj", type=int, default=2, help="parallel jobs (default 2)")
    p.add_argument("--mini", action="store_true", help="a tiny corpus of the same layout, for tests")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    parts = make_variation_corpus(args.out_dir, args.task_kind, args.seed, args.nj, args.mini)
    for part, (utterances, seconds) in parts.items():
        print(f"{part}: {utterances} utterances, {seconds / 60:.2f} min")
    print(f"{args.out_dir}: {len(parts)} data dirs in {time.perf_counter() - start:.0f} s")
    return 0
