"""metarecipe: low-resource speech recognition by meta-learning, with compiled kernels."""

__version__ = "0.1.0"
