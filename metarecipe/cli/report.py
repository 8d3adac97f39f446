"""`metarecipe report ROOT --out RESULTS.md`: CER/WER tables with confidence intervals, significant differences,
adaptation problems, training compute and a plot from a run's scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from metarecipe.errors import InputError
from metarecipe.io.atomic import write_atomic
from metarecipe.report import collect, plot_cer, results_markdown, training_compute
from metarecipe.stats import RESAMPLES


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="tabulate CER/WER by method, target and budget, with 95%% confidence intervals",
                       description="Collects every scores.json under ROOT tagged with method, target and minutes "
                                   "(metarecipe score --tag; several seeds of a cell tagged seed=N), writes "
                                   "Markdown tables of CER and WER with 95%% bootstrap confidence intervals over "
                                   "seeds and utterances, the significant differences, the adaptations that "
                                   "diverged or kept their initial model (adapt.json) and each method's training "
                                   "compute (--meta-dir), with the run's settings; prints them, and plots CER "
                                   "against adaptation minutes with error bars.")
    p.add_argument("root")
    p.add_argument("--out", required=True, help="Markdown file, e.g. RESULTS.md")
    p.add_argument("--plot", help="PNG of CER against adaptation minutes")
    p.add_argument("--set", dest="decode_set", help="only scores tagged with this set (e.g. test)")
    p.add_argument("--methods", nargs="*", default=[], help="row order")
    p.add_argument("--meta-dir", action="append", default=[], metavar="METHOD=DIR",
                   help="the meta-training dir a method's model comes from (repeatable), e.g. "
                        "fomaml=exp/meta_fomaml, pnn=exp/meta_multilingual; its steps and seconds (those of its "
                        "config's init model included) are given beside the CER table")
    p.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE", help="listed under Run settings")
    p.add_argument("--title", default="Results")


def parse_meta_dirs(items: list[str]) -> dict[str, str]:
    """{method: dir} from METHOD=DIR items; InputError for another form or a method given twice."""
    meta_dirs: dict[str, str] = {}
    for item in items:
        method, sep, directory = item.partition("=")
        if not sep or not method or not directory:
            raise InputError(f"--meta-dir wants METHOD=DIR, got {item!r}")
        if method in meta_dirs:
            raise InputError(f"--meta-dir: {method} given twice ({meta_dirs[method]} and {directory})")
        meta_dirs[method] = directory
    return meta_dirs


def run(args: argparse.Namespace) -> int:
    if args.resamples < 100:
        raise InputError(f"--resamples: at least 100 for a 95% interval, got {args.resamples}")
    compute = training_compute(parse_meta_dirs(args.meta_dir))
    rows = collect(args.root, args.decode_set)
    if not any("variant" not in r for r in rows):
        raise InputError(f"{args.root}: no scores.json tagged with method, target and minutes")
    settings = dict(item.partition("=")[::2] for item in args.setting)
    text = results_markdown(rows, settings, args.methods, args.title, compute, args.resamples)
    write_atomic(Path(args.out), text.encode("utf-8"))
    if args.plot:
        plot_cer(rows, args.plot, args.methods, args.resamples)
    print(text)
    return 0
