"""The built-in demo corpus as a plug-in: generates the release (metarecipe.data.demo_corpus) in corpus_dir
unless it is there already, then prepares it through the `commonvoice` path like any real release."""

from __future__ import annotations

from pathlib import Path

from metarecipe.data.corpora import DataPrepError, commonvoice
from metarecipe.data.demo_corpus import LANGUAGES, make_demo_corpus


def prepare(corpus_dir, out_dir, langs=None, splits=commonvoice.SPLITS, minutes=30.0, seed=0,
            train_from_validated: bool = False) -> dict[str, Path]:
    langs = list(langs or LANGUAGES)
    try:
        minutes, seed = float(minutes), int(seed)
    except ValueError:
        raise DataPrepError(f"demo corpus: minutes must be a number and seed an integer, got minutes={minutes!r}, "
                            f"seed={seed!r}") from None
    missing = [lang for lang in langs if not (Path(corpus_dir) / lang / "test.tsv").exists()]
    if missing:
        make_demo_corpus(corpus_dir, missing, minutes, seed)
    return commonvoice.prepare(corpus_dir, out_dir, langs, splits, train_from_validated)
