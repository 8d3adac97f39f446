"""`metarecipe validate-data-dir DIR...`: check Kaldi data directories against every invariant."""

from __future__ import annotations

import argparse

from metarecipe.data.datadir import DataDirError, read_data_dir


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="check Kaldi data directories",
                       description="Checks each data directory (sorted unique keys, speaker prefixes, the same "
                                   "utterances in every table, spk2utt, durations, segments) and lists every "
                                   "problem with its file and line. Exit status 1 if any directory fails.")
    p.add_argument("dirs", nargs="+", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    failed = 0
    for directory in args.dirs:
        try:
            data = read_data_dir(directory)
        except DataDirError as err:
            failed += 1
            print(f"{directory}: FAILED\n  " + str(err).replace("\n", "\n  "))
            continue
        hours = sum(data.utt2dur.values()) / 3600
        print(f"{directory}: OK ({len(data.utterances)} utterances, {len(data.spk2utt)} speakers"
              + (f", {hours:.2f} h)" if data.utt2dur else ")"))
    return 1 if failed else 0
