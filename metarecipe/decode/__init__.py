"""Decoding CTC outputs and scoring hypotheses."""

from metarecipe.decode.greedy import greedy_decode
from metarecipe.decode.scoring import ErrorCounts, edit_counts, error_rate, score

__all__ = ["ErrorCounts", "edit_counts", "error_rate", "greedy_decode", "score"]
