"""`metarecipe meta-train --config CONF --exp-dir DIR [key=value ...]`: a resumable, distributable meta-training run."""

from __future__ import annotations

import argparse
import os

import torch.distributed as dist

from metarecipe.config import load_config
from metarecipe.devices import resolve_device
from metarecipe.meta.experiment import MetaTrainExperiment, run_experiment


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="meta-train a CTC model (resumes; runs under torchrun)",
                       description="Meta-trains the model and algorithm of a YAML config (metarecipe.meta.experiment"
                                   ".MetaTrainExperiment) on the source data directories. The experiment directory "
                                   "receives the resolved config, the command, versions, metrics.jsonl, checkpoints "
                                   "(ckpt/), final.pt and loss.png. Run the same command again to resume from the "
                                   "newest checkpoint; under `torchrun --nproc-per-node N` the tasks of each "
                                   "meta-batch are shared by the processes (gloo on the CPU, NCCL with device=cuda).")
    p.add_argument("--config", help="YAML config (default: built-in defaults and the overrides)")
    p.add_argument("--exp-dir", required=True)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.steps=200 model.d_model=128")


def run(args: argparse.Namespace) -> int:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        config = load_config(MetaTrainExperiment, args.config, args.overrides)
        if distributed:
            dist.init_process_group("nccl" if resolve_device(config.device).type == "cuda" else "gloo")
        records = run_experiment(config, args.exp_dir, ["metarecipe", *args.argv])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    last = records[-1]
    held = [r["held_out_query_loss"] for r in records if "held_out_query_loss" in r]
    print(f"{args.exp_dir}: {last['step']} steps, last loss {last.get('loss', float('nan')):.3f}"
          + (f", held-out query loss {held[0]:.3f} -> {held[-1]:.3f}" if held else ""))
    return 0
