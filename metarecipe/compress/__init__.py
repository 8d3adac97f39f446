"""Compression of adapted models: structured and unstructured magnitude pruning, int8 quantization, export
to a compact file that metarecipe.kernels.compact runs without the training code."""

from metarecipe.compress.export import export_compact
from metarecipe.compress.pipeline import CompressConfig, compress_model
from metarecipe.compress.pruning import magnitude_masks, prune_structured
from metarecipe.compress.quantize import quantize_per_channel

__all__ = ["CompressConfig", "compress_model", "export_compact", "magnitude_masks", "prune_structured",
           "quantize_per_channel"]
