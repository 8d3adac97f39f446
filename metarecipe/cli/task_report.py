"""`metarecipe task-report ROOT --out RESULTS.md --reference unadapted`: CER per method x budget over many targets
(speakers, accents, noise conditions), mean and 95% CI over targets and seeds, against a reference method."""

from __future__ import annotations

import argparse
from pathlib import Path

from metarecipe.errors import InputError
from metarecipe.io.atomic import write_atomic
from metarecipe.report import collect
from metarecipe.stats import RESAMPLES
from metarecipe.task_report import plot_task_cer, task_results_markdown


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="tabulate CER by method and budget over many targets, against a reference",
                       description="Collects every scores.json under ROOT tagged with method, target and minutes "
                                   "(metarecipe score --tag) and writes Markdown: CER per method x budget as the "
                                   "mean over targets and seeds with a 95%% bootstrap interval (targets, then "
                                   "seeds), the relative reduction against --reference per target, and each "
                                   "method's paired difference against the reference and --baselines.")
    p.add_argument("root")
    p.add_argument("--out", required=True, help="Markdown file, e.g. RESULTS.md")
    p.add_argument("--reference", required=True, help="the method every other is measured against (no budget)")
    p.add_argument("--baselines", nargs="*", default=[], help="methods each other method is also compared with")
    p.add_argument("--plot", help="PNG of mean CER against adaptation minutes")
    p.add_argument("--set", dest="decode_set", help="only scores tagged with this set (e.g. test)")
    p.add_argument("--methods", nargs="*", default=[], help="row order")
    p.add_argument("--targets", nargs="+", help="only these targets (default: every target scored)")
    p.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE", help="listed under Run settings")
    p.add_argument("--note", default="", help="a paragraph under the settings (what the targets are)")
    p.add_argument("--title", default="Results")


def run(args: argparse.Namespace) -> int:
    if args.resamples < 100:
        raise InputError(f"--resamples: at least 100 for a 95% interval, got {args.resamples}")
    rows = [r for r in collect(args.root, args.decode_set) if "variant" not in r]
    if not rows:
        raise InputError(f"{args.root}: no scores.json tagged with method, target and minutes")
    if args.targets:
        missing = sorted(set(args.targets) - {r["target"] for r in rows})
        if missing:
            raise InputError(f"{args.root}: no scores of target(s) {', '.join(missing)}")
        rows = [r for r in rows if r["target"] in args.targets]
    settings = dict(item.partition("=")[::2] for item in args.setting)
    text = task_results_markdown(rows, args.reference, args.baselines, settings, args.methods, args.title,
                                 args.note, args.resamples)
    write_atomic(Path(args.out), text.encode("utf-8"))
    if args.plot:
        plot_task_cer(rows, args.reference, args.plot, args.methods, args.resamples)
    print(text)
    return 0
