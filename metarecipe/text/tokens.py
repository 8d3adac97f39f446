"""A shared multilingual character token table: blank first, then <space>, <unk> and every character seen.

Stored as Kaldi's tokens.txt (`symbol id` per line, UTF-8, ids 0, 1, 2... in order, each symbol once). Encoding
maps a normalised transcript to ids, a space to <space> and a character outside the table to <unk>.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from metarecipe.errors import InputError
from metarecipe.io.atomic import write_text_atomic

BLANK, SPACE, UNK = "<blk>", "<space>", "<unk>"


class TokenTableError(InputError, ValueError):
    """A tokens.txt that cannot be read or breaks the format; the message names the file and line."""


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
        """The table of a tokens.txt; TokenTableError naming the file and line of the first problem."""
        try:
            content = Path(path).read_bytes()
        except OSError as err:
            raise TokenTableError(f"{path}: cannot read ({err.strerror})") from err
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as err:
            line = content[:err.start].count(b"\n") + 1
            raise TokenTableError(f"{path}:{line}: not UTF-8 ({err.reason} at byte {err.start})") from None
        symbols: list[str] = []
        first_line: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            parts = line.split()
            if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()) or int(parts[1]) != len(symbols):
                raise TokenTableError(f"{path}:{number}: expected '<symbol> {len(symbols)}', got '{line}' (ids "
                                      "run 0, 1, 2... without gaps or repeats)")
            symbol = parts[0]
            if symbol in first_line:
                raise TokenTableError(f"{path}:{number}: '{symbol}' is listed again (first on line "
                                      f"{first_line[symbol]})")
            first_line[symbol] = number
            symbols.append(symbol)
        if symbols[:3] != [BLANK, SPACE, UNK]:
            raise TokenTableError(f"{path}: a token table starts with {BLANK} 0, {SPACE} 1, {UNK} 2; got "
                                  f"{symbols[:3]}")
        return cls(symbols)

    def write(self, path) -> None:
        write_text_atomic(path, "".join(f"{s} {i}\n" for i, s in enumerate(self.symbols)))

    @property
    def blank(self) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        return [self.ids[SPACE] if ch == " " else self.ids.get(ch, self.ids[UNK]) for ch in " ".join(text.split())]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(" " if i == self.ids[SPACE] else self.symbols[i] for i in ids if i != self.blank)
