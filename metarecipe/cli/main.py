"""Entry point of the `metarecipe` command."""

from __future__ import annotations

import argparse
import sys

from metarecipe.cli import (
    adapt,
    compress,
    compute_feats,
    decode,
    lm_text,
    make_demo_corpus,
    make_tokens,
    meta_train,
    prepare_data,
    report,
    score,
    speed_perturb,
    train_lm,
    validate_data_dir,
)

COMMANDS = {
    "make-demo-corpus": make_demo_corpus,
    "prepare-data": prepare_data,
    "validate-data-dir": validate_data_dir,
    "speed-perturb": speed_perturb,
    "compute-feats": compute_feats,
    "make-tokens": make_tokens,
    "lm-text": lm_text,
    "meta-train": meta_train,
    "adapt": adapt,
    "train-lm": train_lm,
    "decode": decode,
    "compress": compress,
    "score": score,
    "report": report,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarecipe", description="Low-resource ASR by meta-learning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, module in COMMANDS.items():
        module.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line as given, for experiment records
    return COMMANDS[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
