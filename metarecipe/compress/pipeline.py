"""Compressing one model file: structured pruning, unstructured pruning, an optional fine-tune on the
adaptation budget (pruned entries stay zero; CTC, distillation from the unpruned model, or a mix), int8
export. Every input is checked before any work."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metarecipe.compress.distill import check_distill, distillation_losses
from metarecipe.compress.export import check_supported, export_compact, model_from_compact
from metarecipe.compress.pruning import check_keep, check_sparsity, magnitude_masks, prune_structured
from metarecipe.config import ConfigError
from metarecipe.io.model_files import read_model_file
from metarecipe.meta.adapt import AdaptConfig, adapt
from metarecipe.meta.adapt_experiment import target_pool
from metarecipe.meta.tasks import task_losses


@dataclass(frozen=True)
class CompressConfig:
    keep_units: float = 1.0  # share of GRU units (per layer and direction) and projection outputs kept
    keep_channels: float = 1.0  # share of convolution channels kept
    sparsity: float = 0.0  # share of the remaining weights zeroed by global magnitude pruning, in [0, 1)
    int8: bool = False  # linear and recurrent weights in int8 (per output channel)
    finetune_data: str | None = None  # target training data dir: fine-tune after pruning on its budget
    finetune: AdaptConfig = field(default_factory=lambda: AdaptConfig(minutes=1.0))
    distill: float = 0.0  # fine-tune objective: (1 - distill) x CTC + distill x KL(unpruned model || pruned)

    @property
    def prunes(self) -> bool:
        return self.keep_units < 1.0 or self.keep_channels < 1.0 or self.sparsity > 0.0


def _checked(model_path, config: CompressConfig):
    """(model, tokens, info, fine-tuning pool or None, front end and decoding bundle), or an InputError naming the
    file, option or number."""
    check_keep(config.keep_units, "keep_units")
    check_keep(config.keep_channels, "keep_channels")
    check_sparsity(config.sparsity)
    check_distill(config.distill)
    loaded = read_model_file(model_path)
    model, tokens, info = loaded.model, loaded.tokens, loaded.info
    if loaded.is_compact:
        model = model_from_compact(model)
    else:
        check_supported(model, model_path)
    pool = None
    if config.finetune_data is not None:
        if not config.prunes:
            raise ConfigError("finetune_data: fine-tuning follows pruning; nothing is pruned (keep_units = "
                              "keep_channels = 1, sparsity = 0)")
        pool = target_pool(config.finetune_data, tokens, config.finetune, model.config.num_mel_bins,
                           "finetune.minutes")
    return model, tokens, info, pool, loaded.bundle()


def compress_model(model_path, out_path, config: CompressConfig) -> dict:
    """Compresses the model file (or a compact file, to prune or quantize it further) into the compact file
    `out_path`; returns a summary (sizes, parameters,
    fine-tuning history) for compress.json."""
    model, tokens, info, pool, bundle = _checked(model_path, config)
    start = time.perf_counter()
    before = sum(p.numel() for p in model.params.values())
    teacher = copy.deepcopy(model) if pool is not None and config.distill > 0 else None
    if config.keep_units < 1.0 or config.keep_channels < 1.0:
        model = prune_structured(model, config.keep_units, config.keep_channels)
    masks = magnitude_masks(dict(model.params), config.sparsity) if config.sparsity > 0 else None
    if masks is not None:
        with torch.no_grad():
            for name, mask in masks.items():
                model.params[name].mul_(mask)
    history = []
    if pool is not None:
        losses = distillation_losses(teacher, config.distill) if teacher is not None else task_losses
        result = adapt(model, pool, config.finetune, "sgd", masks=masks, losses=losses)
        with torch.no_grad():
            for name, value in result.params.items():
                model.params[name].copy_(value)
        history = result.history
    compact = export_compact(model, tokens, out_path, config.int8,
                             {**info, "compressed_from": str(model_path), "keep_units": config.keep_units,
                              "keep_channels": config.keep_channels, "sparsity": config.sparsity,
                              "int8": config.int8}, bundle)
    return {"model": str(model_path), "out": str(out_path), "config": {
                "keep_units": config.keep_units, "keep_channels": config.keep_channels,
                "sparsity": config.sparsity, "int8": config.int8, "finetune_data": config.finetune_data,
                "distill": config.distill},
            "params_before": before, "params": sum(p.numel() for p in model.params.values()),
            "nonzero_params": compact.parameter_count(), "bytes": Path(out_path).stat().st_size,
            "shape": compact.config, "finetune_history": [{"step": s, "held_out_loss": v} for s, v in history],
            "seconds": round(time.perf_counter() - start, 2)}
