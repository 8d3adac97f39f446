"""A shared multilingual character token table: blank first, then <space>, <unk> and every character seen.

Stored as Kaldi's tokens.txt (`symbol id` per line). Encoding maps a normalised transcript to ids, a space
to <space> and a character outside the table to <unk>.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

BLANK, SPACE, UNK = "<blk>", "<space>", "<unk>"


class TokenTable:
    def __init__(self, symbols: list[str]):
        if symbols[:3] != [BLANK, SPACE, UNK]:
            raise ValueError(f"a token table starts with {BLANK}, {SPACE}, {UNK}; got {symbols[:3]}")
        if len(set(symbols)) != len(symbols):
            raise ValueError("a token table lists each symbol once")
        self.symbols = symbols
        self.ids = {s: i for i, s in enumerate(symbols)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> TokenTable:
        chars = sorted({ch for text in texts for ch in text if not ch.isspace()})
        return cls([BLANK, SPACE, UNK] + chars)

    @classmethod
    def read(cls, path) -> TokenTable:
        symbols = []
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) != len(symbols):
                raise ValueError(f"{path}:{number}: expected '<symbol> {len(symbols)}', got '{line}'")
            symbols.append(parts[0])
        return cls(symbols)

    def write(self, path) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{s} {i}\n" for i, s in enumerate(self.symbols)), encoding="utf-8")
        os.replace(tmp, path)

    @property
    def blank(self) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        return [self.ids[SPACE] if ch == " " else self.ids.get(ch, self.ids[UNK]) for ch in " ".join(text.split())]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(" " if i == self.ids[SPACE] else self.symbols[i] for i in ids if i != self.blank)
