"""Corpus plug-ins: each turns a corpus directory into validated Kaldi data directories.

A plug-in is a function ``prepare(corpus_dir, out_dir, **options) -> dict[str, Path]`` (the data directories
it wrote, by name such as ``de/train``). Built in: ``commonvoice``, ``kaldi``, ``demo`` (generated offline) and
``asterisk`` (the recorded prompts of Debian's asterisk-core-sounds-<l> packages). Other packages add their
own through the Python entry-point group ``metarecipe.corpora``, e.g. in their pyproject.toml:

    [project.entry-points."metarecipe.corpora"]
    mycorpus = "mypackage.corpus:prepare"

A recipe's own plug-in may also be a Python file named by its path (``local/my_corpus.py``) whose ``prepare``
is used: the skeleton is recipes/TEMPLATE/local/folder_tsv.py. Nothing after data preparation knows which
corpus a data directory came from.

Corpus metadata comes from strangers. A plug-in turns every path it reads from it into a file with
``corpus_file`` (a file inside the corpus directory whose name wav.scp keeps as that file name, never a
command), reads audio with ``metarecipe.data.audio.file_duration`` (files only), checks the ids it builds with
``metarecipe.data.datadir.id_problem``, and lists every row it leaves out, with the reason, in ``skipped.tsv``.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path, PurePath

from metarecipe.data.datadir import DataDir, DataDirError, validate_data_dir, wav_problem, write_data_dir
from metarecipe.errors import InputError

ENTRY_POINT_GROUP = "metarecipe.corpora"
BUILT_IN = {
    "commonvoice": "metarecipe.data.corpora.commonvoice:prepare",
    "kaldi": "metarecipe.data.corpora.kaldi:prepare",
    "demo": "metarecipe.data.corpora.demo:prepare",
    "asterisk": "metarecipe.data.corpora.asterisk:prepare",
}


class DataPrepError(InputError, RuntimeError):
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
        raise DataPrepError(f"{path}: a corpus plug-in file must define prepare(corpus_dir, out_dir, **options)")
    return module.prepare


def get_corpus(name: str) -> Callable:
    """The prepare function of a corpus plug-in (a name, or the path of a .py file defining prepare);
    DataPrepError naming the installed ones if there is none."""
    if name.endswith(".py"):
        if not Path(name).is_file():
            raise DataPrepError(f"corpus plug-in file {name} does not exist")
        return _from_file(Path(name))
    if name in BUILT_IN:
        return _load(BUILT_IN[name])
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    raise DataPrepError(f"no corpus plug-in '{name}'; installed: {', '.join(available_corpora())}")


def wav_scp_problem(value: str) -> str | None:
    """Why `value`, written as a wav.scp value, would not be read back (by metarecipe and Kaldi) as the file of
    that name, or None."""
    if problem := wav_problem(value):
        return problem
    if value == "-":
        return "is '-' (standard input in Kaldi)"
    if "\t" in value:
        return "holds a tab (a field separator in Kaldi tables)"
    if value != value.strip():
        return "starts or ends with whitespace"
    if value.startswith("|") or value.endswith("|"):
        return "starts or ends with '|' (a wav.scp pipe command)"
    if re.search(r":[0-9]+$", value):
        return "ends in ':<digits>' (an offset into an archive in Kaldi)"
    return None


def corpus_file(corpus_dir: str | Path, name: str) -> Path | str:
    """The absolute path of the file that `name`, a path read from corpus metadata, names relative to
    corpus_dir, or the reason it is not one to use: an absolute name, one that resolves (through '..' or
    symlinks) outside corpus_dir, or one that wav.scp could not hold as that file name. Whether the file exists
    is left to the caller."""
    if problem := wav_scp_problem(name):
        return f"path {name!r} {problem}"
    if PurePath(name).is_absolute():
        return f"path {name!r} is absolute (a corpus names its files relative to itself)"
    root = Path(corpus_dir).resolve()
    try:
        path = (root / name).resolve()
        path.exists()  # OSError for a name the file system refuses (too long...)
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop
        return f"path {name!r} cannot be used ({err})"
    if not path.is_relative_to(root):
        return f"path {name!r} leads outside the corpus directory {root} (to {str(path)!r})"
    if problem := wav_scp_problem(str(path)):
        return f"path {name!r} resolves to {str(path)!r}, which {problem}"
    return path


def skipped_lines(skipped: list) -> list[str]:
    """The lines of a skipped.tsv from (where, Dropped) pairs: one comment line per kind of reason with its count
    (most frequent first), then `where<TAB>reason` per row left out."""
    counts = Counter(reason.kind for _, reason in skipped)
    return [f"# skipped\t{count}\t{kind}" for kind, count in sorted(counts.items(), key=lambda kc: (-kc[1], kc[0]))] \
        + [f"{where}\t{reason}" for where, reason in skipped]


def write_prepared(prepared: dict[str, tuple[DataDir, list[str]]], out_dir: Path) -> dict[str, Path]:
    """Validates every data directory of `prepared` (name -> (data, skipped.tsv lines)), then writes them all
    under out_dir: nothing is written when any is invalid (DataDirError listing its problems)."""
    for name, (data, _) in prepared.items():
        if problems := validate_data_dir(data, str(out_dir / name)):
            raise DataDirError("\n".join(problems))
    written = {}
    for name, (data, skipped) in prepared.items():
        written[name] = write_data_dir(data, out_dir / name)
        (written[name] / "skipped.tsv").write_text("".join(f"{line}\n" for line in skipped), encoding="utf-8")
    return written
