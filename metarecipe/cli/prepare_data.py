"""`metarecipe prepare-data CORPUS CORPUS_DIR OUT_DIR`: run a corpus plug-in, then summarise what it wrote.
Errors (DataPrepError, DataDirError, ...) propagate to metarecipe.cli.main, which prints them on stderr."""

from __future__ import annotations

import argparse
import inspect

from metarecipe.data.corpora import DataPrepError, available_corpora, get_corpus
from metarecipe.data.datadir import read_data_dir


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="corpus directory -> Kaldi data directories",
                       description=f"Runs a corpus plug-in (installed: {', '.join(available_corpora())}) and "
                                   "writes validated data directories under OUT_DIR, with skipped.tsv listing "
                                   "every utterance left out and why.")
    p.add_argument("corpus", help="plug-in name (e.g. commonvoice, kaldi) or the path of a plug-in .py file")
    p.add_argument("corpus_dir", help="the corpus (for commonvoice: the release directory with <lang>/ inside)")
    p.add_argument("out_dir", help="where the data directories go")
    p.add_argument("--langs", nargs="+", help="languages to prepare (default: the plug-in's choice)")
    p.add_argument("--splits", nargs="+", help="splits to prepare (default: the plug-in's choice)")
    p.add_argument("--train-from-validated", action="store_true",
                   help="commonvoice: train on validated.tsv minus dev and test sentences and speakers")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="another keyword option for the plug-in (repeatable)")


def plugin_options(args: argparse.Namespace) -> dict:
    options = {}
    for item in args.opt:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataPrepError(f"--opt wants KEY=VALUE, got '{item}'")
        options[key.replace("-", "_")] = value
    if args.langs:
        options["langs"] = args.langs
    if args.splits:
        options["splits"] = args.splits
    if args.train_from_validated:
        options["train_from_validated"] = True
    return options


def check_options(prepare, corpus: str, options: dict) -> None:
    """DataPrepError naming the plug-in when it does not take these options (before it writes anything)."""
    try:
        inspect.signature(prepare).bind("corpus_dir", "out_dir", **options)
    except TypeError as err:
        raise DataPrepError(f"corpus plug-in '{corpus}' does not take these options: {err}") from None


def run(args: argparse.Namespace) -> int:
    prepare = get_corpus(args.corpus)
    options = plugin_options(args)
    check_options(prepare, args.corpus, options)
    written = prepare(args.corpus_dir, args.out_dir, **options)
    print(f"{'data dir':<40} {'utts':>7} {'spks':>6} {'hours':>7} {'skipped':>8}")
    for path in sorted(written.values()):
        data = read_data_dir(path)
        skipped_file = path / "skipped.tsv"
        skipped = sum(1 for line in skipped_file.read_text(encoding="utf-8").splitlines()
                      if line and not line.startswith("#")) if skipped_file.exists() else 0
        hours = sum(data.utt2dur.values()) / 3600
        print(f"{str(path):<40} {len(data.utterances):>7} {len(data.spk2utt):>6} {hours:>7.2f} {skipped:>8}")
    return 0
