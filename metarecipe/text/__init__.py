"""Text: normalisation per language (token tables and n-gram LMs come with the decoding issue)."""

from metarecipe.text.normalize import normalize

__all__ = ["normalize"]
