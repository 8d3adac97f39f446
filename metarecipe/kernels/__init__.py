"""Hot-path kernels, one front per kernel, each choosing among the cuda, cpp, numba and torch backends.

The kernels know nothing of models, data or recipes.
"""

from metarecipe.kernels.backends import available_backends
from metarecipe.kernels.ctc_loss import ctc_loss

__all__ = ["available_backends", "ctc_loss"]
