"""Hot-path kernels, one front per kernel, each choosing among the cuda, cpp, numba and torch backends.

The kernels know nothing of models, data or recipes.
"""

from metarecipe.kernels.backends import available_backends
from metarecipe.kernels.beam_search import BeamSearchOptions, Hypothesis, LMTables, ctc_beam_search
from metarecipe.kernels.ctc_align import CTCAlignment, ctc_forced_align
from metarecipe.kernels.ctc_loss import ctc_loss

__all__ = ["BeamSearchOptions", "CTCAlignment", "Hypothesis", "LMTables", "available_backends", "ctc_beam_search",
           "ctc_forced_align", "ctc_loss"]
