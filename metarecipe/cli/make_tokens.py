"""`metarecipe make-tokens OUT DATA_DIR...`: the shared character table of several data directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from metarecipe.data import read_data_dir
from metarecipe.text.tokens import TokenTable


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="write the token table (characters) of data directories",
                       description="Writes OUT as a Kaldi tokens.txt: <blk> 0, <space> 1, <unk> 2, then every "
                                   "character of the transcripts of the data directories, sorted. Source and target "
                                   "languages share it, so one model covers them all.")
    p.add_argument("out")
    p.add_argument("data_dirs", nargs="+")


def run(args: argparse.Namespace) -> int:
    texts = [t for d in args.data_dirs for t in read_data_dir(d).text.values()]
    tokens = TokenTable.from_texts(texts)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tokens.write(args.out)
    print(f"{args.out}: {len(tokens)} tokens from {len(texts)} transcripts of {len(args.data_dirs)} data dirs")
    return 0
