"""`metarecipe compress MODEL OUT`: pruning, an optional fine-tune, int8 quantization, export to one file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metarecipe.compress.pipeline import CompressConfig, compress_model
from metarecipe.config import ConfigError, FieldError
from metarecipe.io.atomic import write_atomic
from metarecipe.meta.adapt import AdaptConfig

FINETUNE_OPTIONS = {"minutes": "--finetune-minutes", "max_steps": "--finetune-steps", "lr": "--finetune-lr"}


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="prune, fine-tune and quantize a model into one compact file",
                       description="Compresses a BiGRU CTC model file (adapt's adapted.pt): structured pruning "
                                   "(--keep-units, --keep-channels: the matrices shrink), global unstructured "
                                   "magnitude pruning (--sparsity), a fine-tune of the pruned model on the "
                                   "adaptation budget (--finetune-data, --finetune-minutes; pruned weights stay "
                                   "zero; --distill to follow the unpruned model's posteriors), int8 linear "
                                   "and recurrent weights (--int8). Writes OUT, a compact file that "
                                   "metarecipe.kernels.compact loads without the training code and "
                                   "`metarecipe decode` decodes, and OUT's name with .json: sizes and parameters.")
    p.add_argument("model", help="model file (metarecipe.io.model_files), e.g. exp/adapt/<run>/adapted.pt")
    p.add_argument("out", help="the compact model file to write")
    p.add_argument("--keep-units", type=float, default=1.0,
                   help="share of GRU units (each layer and direction) and projection outputs kept (default 1)")
    p.add_argument("--keep-channels", type=float, default=1.0, help="share of convolution channels kept (default 1)")
    p.add_argument("--sparsity", type=float, default=0.0,
                   help="share of the weights zeroed by global magnitude pruning, in [0, 1) (default 0)")
    p.add_argument("--int8", action="store_true", help="int8 linear and recurrent weights (per output channel)")
    p.add_argument("--finetune-data", help="target training data dir: fine-tune the pruned model on its budget")
    defaults = AdaptConfig(minutes=1.0)
    p.add_argument("--finetune-minutes", type=float, default=defaults.minutes,
                   help="the budget (minutes of speech, drawn as adapt draws it with the same seed)")
    p.add_argument("--finetune-steps", type=int, default=defaults.max_steps, help="at most this many SGD steps")
    p.add_argument("--finetune-lr", type=float, default=defaults.lr)
    p.add_argument("--distill", type=float, default=0.0,
                   help="fine-tune objective: (1 - W) x CTC + W x the frame-level KL divergence from the unpruned "
                        "model's posteriors, W in [0, 1] (default 0: CTC only)")
    p.add_argument("--seed", type=int, default=defaults.seed)


def finetune_config(args: argparse.Namespace) -> AdaptConfig:
    try:
        return AdaptConfig(minutes=args.finetune_minutes, lr=args.finetune_lr, max_steps=args.finetune_steps,
                           seed=args.seed)
    except FieldError as err:
        raise ConfigError(f"{FINETUNE_OPTIONS[err.key]}: {err.reason}") from None


def run(args: argparse.Namespace) -> int:
    config = CompressConfig(keep_units=args.keep_units, keep_channels=args.keep_channels, sparsity=args.sparsity,
                            int8=args.int8, finetune_data=args.finetune_data, finetune=finetune_config(args),
                            distill=args.distill)
    summary = compress_model(args.model, args.out, config)
    out = Path(args.out)
    write_atomic(out.with_name(out.stem + ".json"), (json.dumps(summary, indent=1) + "\n").encode())
    print(f"{args.model} -> {out}: {summary['nonzero_params']} nonzero parameters of {summary['params_before']}, "
          f"{summary['bytes'] / 1024:.0f} KiB ({summary['seconds']:.1f} s)")
    return 0
