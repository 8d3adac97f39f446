"""Import an existing Kaldi data directory (from Kaldi, ESPnet or lhotse), as Kaldi's fix_data_dir.sh does.

The source is read leniently (datadir.read_foreign_data_dir: lines are split on "\\n" only, unsorted files and
repeated keys are accepted) and never written to. An utterance whose speaker id is not a prefix of its id is
kept under the id ``<speaker>-<utterance>`` (Kaldi's convention), listed as ``old<TAB>new`` in ``renamed.tsv``.
Every utterance left out (a line that cannot be read, such as a transcript holding a control character or a
line separator, is never cut short) is listed with its reason, file and line in ``skipped.tsv``. The output is
written only once the result validates; nothing usable left is a DataPrepError.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from metarecipe.data.corpora import DataPrepError
from metarecipe.data.datadir import DataDir, fix_data_dir, printable, read_foreign_data_dir, write_data_dir


def _prefix_speakers(data: DataDir) -> tuple[DataDir, dict[str, str]]:
    """The data with every utterance whose speaker id is not a prefix of its id renamed `<speaker>-<utterance>`
    (its recording too, without segments), and {old id: new id}. An utterance whose new id is taken keeps its
    id (fix_data_dir then leaves it out)."""
    renamed: dict[str, str] = {}
    taken = set(data.utt2spk)
    for utt, speaker in sorted(data.utt2spk.items()):
        new = f"{speaker}-{utt}"
        if not utt.startswith(speaker) and new not in taken:
            renamed[utt] = new
            taken.add(new)
    if not renamed:
        return data, renamed

    def rename(table: dict) -> dict:
        return {renamed.get(key, key): value for key, value in table.items()}

    return replace(data, wav_scp=data.wav_scp if data.segments else rename(data.wav_scp), text=rename(data.text),
                   utt2spk=rename(data.utt2spk), utt2dur=rename(data.utt2dur), utt2lang=rename(data.utt2lang),
                   segments=rename(data.segments)), renamed


def _write_tsv(path: Path, rows: dict[str, str]) -> None:
    path.write_text("".join(f"{printable(key)}\t{printable(value)}\n" for key, value in sorted(rows.items())),
                    encoding="utf-8")


def prepare(corpus_dir, out_dir, name: str | None = None, lang: str | None = None) -> dict[str, Path]:
    """out_dir/<name> (default: the source directory's name), with utt2lang set to `lang` when given."""
    source = Path(corpus_dir)
    target = Path(out_dir) / (name or source.name)
    if target.resolve() == source.resolve():
        raise DataPrepError(f"{target}: is the source directory itself; choose another output directory")
    data, unreadable = read_foreign_data_dir(source)
    data, renamed = _prefix_speakers(data)
    data, dropped = fix_data_dir(data)
    original = {new: old for old, new in renamed.items()}
    skipped = {original.get(utt, utt): reason for utt, reason in dropped.items()}
    skipped = {key: unreadable.get(key, reason) for key, reason in skipped.items()}
    kept = {original.get(utt, utt) for utt in data.utt2spk}
    skipped.update({key: reason for key, reason in unreadable.items() if key not in kept and key not in skipped})
    if not data.utt2spk:
        example = next(iter(sorted(skipped.items())), ("", "the tables are empty"))
        raise DataPrepError(f"{source}: no usable utterance ({len(skipped)} left out, e.g. "
                            f"'{printable(example[0])}': {example[1]})")
    if lang is not None:
        data.utt2lang = dict.fromkeys(data.utt2spk, lang)
    write_data_dir(data, target)
    _write_tsv(target / "renamed.tsv", {old: new for old, new in renamed.items() if new in data.utt2spk})
    _write_tsv(target / "skipped.tsv", skipped)
    return {name or source.name: target}
