"""`metarecipe validate-data-dir DIR...`: check Kaldi data directories against every rule (Kaldi's
utils/validate_data_dir.sh and validate_text.pl as the floor; see metarecipe.data.datadir)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metarecipe.data.datadir import DataDir, DataDirError, read_data_dir, utterances_with_features


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="check Kaldi data directories",
                       description="Checks each data directory as Kaldi's utils/validate_data_dir.sh does, and "
                                   "more (UTF-8 lines ending in a newline, no control characters, sorted unique "
                                   "keys, speaker prefixes, the same utterances in every table, spk2utt, "
                                   "durations, segments, feats.scp, utt2num_frames, cmvn.scp). Prints OK per "
                                   "directory, or FAILED and every problem with its file and line on stderr. "
                                   "Exit status 1 if any directory fails.")
    p.add_argument("dirs", nargs="+", metavar="DIR")


def summary(directory: Path, data: DataDir) -> str:
    """utterances, speakers, hours and features of a valid directory."""
    parts = [f"{len(data.utterances)} utterances", f"{len(data.spk2utt)} speakers"]
    if data.utt2dur:
        parts.append(f"{sum(data.utt2dur.values()) / 3600:.2f} h")
    if (directory / "feats.scp").exists():
        kept, skipped = utterances_with_features(directory)
        parts.append(f"features for {len(kept)}" + (f", {len(skipped)} in feats_skipped.tsv" if skipped else ""))
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    failed = 0
    for directory in map(Path, args.dirs):
        try:
            print(f"{directory}: OK ({summary(directory, read_data_dir(directory))})")
        except DataDirError as err:
            failed += 1
            print(f"{directory}: FAILED\n  " + str(err).replace("\n", "\n  "), file=sys.stderr)
    return 1 if failed else 0
