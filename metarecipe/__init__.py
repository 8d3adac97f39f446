"""metarecipe: low-resource speech recognition by meta-learning, with compiled kernels.

`metarecipe.Recognizer` (metarecipe.inference.recognizer) transcribes audio with a bundled model; it is imported
on first use, so that light commands and `import metarecipe` stay free of torch.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Recognizer":
        from metarecipe.inference.recognizer import Recognizer

        return Recognizer
    raise AttributeError(f"module 'metarecipe' has no attribute {name!r}")
