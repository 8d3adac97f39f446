"""Decoding CTC outputs and scoring hypotheses. Scoring needs no torch; the decoders (greedy, beam) are imported
from their modules."""

from metarecipe.decode.scoring import ErrorCounts, edit_counts, error_rate, score

__all__ = ["ErrorCounts", "edit_counts", "error_rate", "score"]
