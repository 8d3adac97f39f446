"""Entry point of the `metarecipe` command."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from metarecipe.errors import InputError

# the commands; each is the module metarecipe.cli.<name, - written _>, imported only when it runs (the others
# pull in torch and numba, seconds per process, which a recipe's many short `score` or `lm-text` jobs would pay)
COMMANDS = ("make-demo-corpus", "make-variation-corpus", "make-noise-tasks", "prepare-data", "validate-data-dir",
            "speed-perturb", "compute-feats", "make-tokens", "lm-text", "meta-train", "adapt", "train-lm", "decode",
            "bundle", "transcribe", "compress", "export", "score", "report", "task-report")


def command_module(name: str):
    """The module of command `name` (its add_parser and run)."""
    return importlib.import_module(f"metarecipe.cli.{name.replace('-', '_')}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with `only` set, of that command alone (the rest listed by name)."""
    parser = argparse.ArgumentParser(prog="metarecipe", description="Low-resource ASR by meta-learning.")
    parser.add_argument("--debug", action="store_true", help="on an error, print the traceback too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name in COMMANDS:
        if only is None or name == only:
            command_module(name).add_parser(sub, name)
        else:
            sub.add_parser(name)
    return parser


def command_of(argv: list[str]) -> str | None:
    """The command named on the command line (its first word that is not an option), if it is a known one."""
    words = [a for a in argv if not a.startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command_of(argv)).parse_args(argv)
    args.argv = [a for a in argv if a != "--debug"]  # the command line as given, for experiment records
    try:
        return command_module(args.command).run(args)
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
