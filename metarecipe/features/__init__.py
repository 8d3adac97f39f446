"""Features: Kaldi-compatible log-mel filterbanks, CMVN, parallel extraction into Kaldi ark/scp. Augmentation
(torch-based) is imported from metarecipe.features.augment."""

from metarecipe.features.cmvn import apply_cmvn, compute_cmvn
from metarecipe.features.extract import compute_feats
from metarecipe.features.fbank import FbankConfig, compute_fbank

__all__ = ["FbankConfig", "apply_cmvn", "compute_cmvn", "compute_fbank", "compute_feats"]
