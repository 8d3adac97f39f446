"""`metarecipe report ROOT --out RESULTS.md`: CER/WER tables and a plot from a run's scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from metarecipe.checkpoints import write_atomic
from metarecipe.errors import InputError
from metarecipe.report import collect, plot_cer, results_markdown


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="tabulate CER/WER by method, target and budget",
                       description="Collects every scores.json under ROOT tagged with method, target and minutes "
                                   "(metarecipe score --tag), writes Markdown tables of CER and WER with the run's "
                                   "settings, prints them, and plots CER against adaptation minutes.")
    p.add_argument("root")
    p.add_argument("--out", required=True, help="Markdown file, e.g. RESULTS.md")
    p.add_argument("--plot", help="PNG of CER against adaptation minutes")
    p.add_argument("--set", dest="decode_set", help="only scores tagged with this set (e.g. test)")
    p.add_argument("--methods", nargs="*", default=[], help="row order")
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE", help="listed under Run settings")
    p.add_argument("--title", default="Results")


def run(args: argparse.Namespace) -> int:
    rows = collect(args.root, args.decode_set)
    if not rows:
        raise InputError(f"{args.root}: no scores.json tagged with method, target and minutes")
    settings = dict(item.partition("=")[::2] for item in args.setting)
    text = results_markdown(rows, settings, args.methods, args.title)
    write_atomic(Path(args.out), text.encode("utf-8"))
    if args.plot:
        plot_cer(rows, args.plot, args.methods)
    print(text)
    return 0
