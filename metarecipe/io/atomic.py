"""Files written completely or not at all: a temp file beside the target, fsync, rename, directory fsync. Every
writer of metarecipe goes through here. No torch here, so that light commands (score, lm-text, report) start in a
fraction of a second."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (a plot, a Kaldi ark, a gzip stream):
    when the block ends without an error it is synced and renamed onto `path`, else removed. `suffix` ends the
    temporary name, for writers that choose the format by it (".png")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def write_atomic(path, data: bytes) -> None:
    """path gets data completely or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path, text: str) -> None:
    """path gets the UTF-8 text completely or not at all."""
    write_atomic(path, text.encode("utf-8"))
