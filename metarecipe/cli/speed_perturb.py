"""`metarecipe speed-perturb SRC DST`: a data directory with speed-perturbed copies (Kaldi style)."""

from __future__ import annotations

import argparse

from metarecipe.data.datadir import read_data_dir, write_data_dir
from metarecipe.data.perturb import speed_perturb
from metarecipe.errors import InputError


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="add speed-perturbed copies of a data directory",
                       description="Writes DST with SRC's utterances plus one copy per factor (ids and speakers "
                                   "prefixed sp<factor>-), whose wav.scp entries are pipe commands that play the "
                                   "audio at that speed. Run compute-feats on DST afterwards.")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--factors", nargs="+", type=float, default=[0.9, 1.1])
    p.add_argument("--no-original", action="store_true", help="leave the unperturbed utterances out")


def run(args: argparse.Namespace) -> int:
    source = read_data_dir(args.src)
    try:
        data = speed_perturb(source, args.factors, keep_original=not args.no_original)
    except ValueError as err:  # a factor out of range (metarecipe.data.perturb raises a plain ValueError)
        raise InputError(str(err)) from err
    write_data_dir(data, args.dst)
    print(f"{args.dst}: {len(data.utterances)} utterances, {len(data.spk2utt)} speakers")
    return 0
