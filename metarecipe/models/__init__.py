"""CTC acoustic models whose every layer runs N tasks at once from stacked per-task parameters."""

from metarecipe.models.ctc_model import BatchedCTCModel, ModelConfig, parameter_shapes
from metarecipe.models.progressive import ProgressiveCTCModel

__all__ = ["BatchedCTCModel", "ModelConfig", "ProgressiveCTCModel", "parameter_shapes"]
