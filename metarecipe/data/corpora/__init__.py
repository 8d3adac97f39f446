"""Corpus plug-ins: each turns a corpus directory into validated Kaldi data directories.

A plug-in is a function ``prepare(corpus_dir, out_dir, **options) -> dict[str, Path]`` (the data directories
it wrote, by name such as ``de/train``). Built in: ``commonvoice``, ``kaldi`` and ``demo`` (generated offline).
Other packages add their own through the Python entry-point group ``metarecipe.corpora``, e.g. in their
pyproject.toml:

    [project.entry-points."metarecipe.corpora"]
    mycorpus = "mypackage.corpus:prepare"

A recipe's own plug-in may also be a Python file named by its path (``local/my_corpus.py``) whose ``prepare``
is used: the skeleton is recipes/TEMPLATE/local/folder_tsv.py. Nothing after data preparation knows which
corpus a data directory came from.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

ENTRY_POINT_GROUP = "metarecipe.corpora"
BUILT_IN = {
    "commonvoice": "metarecipe.data.corpora.commonvoice:prepare",
    "kaldi": "metarecipe.data.corpora.kaldi:prepare",
    "demo": "metarecipe.data.corpora.demo:prepare",
}


class DataPrepError(RuntimeError):
    """Input that is not what it claims to be, or nothing usable left to prepare."""


def _load(target: str) -> Callable:
    module, _, attr = target.partition(":")
    return getattr(__import__(module, fromlist=[attr]), attr)


def available_corpora() -> list[str]:
    """Names of the built-in and installed corpus plug-ins."""
    return sorted(set(BUILT_IN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def _from_file(path: Path) -> Callable:
    spec = importlib.util.spec_from_file_location(f"metarecipe_corpus_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "prepare", None)):
        raise ValueError(f"{path}: a corpus plug-in file must define prepare(corpus_dir, out_dir, **options)")
    return module.prepare


def get_corpus(name: str) -> Callable:
    """The prepare function of a corpus plug-in (a name, or the path of a .py file defining prepare); ValueError
    naming the installed ones if there is none."""
    if name.endswith(".py"):
        if not Path(name).is_file():
            raise ValueError(f"corpus plug-in file {name} does not exist")
        return _from_file(Path(name))
    if name in BUILT_IN:
        return _load(BUILT_IN[name])
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    raise ValueError(f"no corpus plug-in '{name}'; installed: {', '.join(available_corpora())}")
