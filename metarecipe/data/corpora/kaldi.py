"""Import an existing Kaldi data directory (from Kaldi, ESPnet or lhotse): read it, keep the utterances that
satisfy every invariant (as Kaldi's fix_data_dir.sh) and write it with the reasons for the others."""

from __future__ import annotations

from pathlib import Path

from metarecipe.data.datadir import fix_data_dir, read_data_dir, write_data_dir


def prepare(corpus_dir, out_dir, name: str | None = None, lang: str | None = None) -> dict[str, Path]:
    """out_dir/<name> (default: the source directory's name), with utt2lang set to `lang` when given."""
    source = Path(corpus_dir)
    data, dropped = fix_data_dir(read_data_dir(source, validate=False))
    if lang is not None:
        data.utt2lang = {utt: lang for utt in data.utterances}
    target = Path(out_dir) / (name or source.name)
    write_data_dir(data, target)
    (target / "skipped.tsv").write_text("".join(f"{u}\t{r}\n" for u, r in dropped.items()), encoding="utf-8")
    return {name or source.name: target}
