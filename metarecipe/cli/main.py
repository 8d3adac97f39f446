"""Entry point of the `metarecipe` command."""

from __future__ import annotations

import argparse
import sys
import traceback

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
from metarecipe.errors import InputError

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
    parser.add_argument("--debug", action="store_true", help="on an error, print the traceback too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, module in COMMANDS.items():
        module.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = [a for a in argv if a != "--debug"]  # the command line as given, for experiment records
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print(f"metarecipe {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every failure is one line on stderr; --debug adds the traceback
        if args.debug:
            traceback.print_exc()
        print(f"metarecipe {args.command}: {error_line(err)}", file=sys.stderr)
        return 1


def error_line(err: BaseException) -> str:
    """The message of an input error, or a bug's type and message with a pointer to --debug, on one line."""
    text = str(err) if isinstance(err, InputError | OSError) else (
        f"internal error: {type(err).__name__}: {err} (run `metarecipe --debug ...` for the traceback)")
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
