"""Transcript normalisation shared by data preparation, token tables and LM text.

``normalize(sentence, lang)`` returns the sentence in Unicode NFC, with numbers written in digits spelled out
in the language (metarecipe.text.numbers, by num2words), lower case, with punctuation and symbols replaced by
spaces, letters with diacritics kept, and apostrophes kept inside words (l'eau, don't) after mapping the
typographic ones to U+0027. A sentence that cannot be spoken as written is dropped (None): one with digits in a
language num2words does not spell (or a number it cannot spell), one with letters outside the language's
script, or one left empty. ``normalize_or_drop`` says which, as a ``Dropped`` reason.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

from metarecipe.text.numbers import UnspelledNumber, spell_numbers

APOSTROPHE = "'"
_APOSTROPHE_LIKE = dict.fromkeys(map(ord, "\u2019\u02bc\u2018\u0060\u00b4\u02b9\u2032"), APOSTROPHE)
# languages by script; others are accepted in any script
SCRIPTS = {
    "LATIN": {"br", "ca", "cs", "cy", "de", "en", "eo", "es", "eu", "fr", "ga", "it", "nl", "pl", "pt", "sk", "sl",
              "sv", "tr"},
    "CYRILLIC": {"be", "bg", "ru", "uk"},
}
_LANG_SCRIPT = {lang: script for script, langs in SCRIPTS.items() for lang in langs}
_STRAY_APOSTROPHES = re.compile(r"(?<!\w)'+|'+(?!\w)")
FOREIGN_LETTERS = "letters outside the language's script"
NOTHING_LEFT = "nothing left after normalisation"


class Dropped(NamedTuple):
    """Why a sentence (or a corpus row) is left out: `kind`, one fixed phrase to count by, and `reason`, the
    message that says which (the kind itself when empty)."""

    kind: str
    reason: str = ""

    def __str__(self) -> str:
        return self.reason or self.kind


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LM"


def _script_ok(word: str, script: str | None) -> bool:
    return script is None or all(
        unicodedata.category(ch)[0] == "M" or unicodedata.name(ch, "").startswith(script) for ch in word)


def _script(lang: str) -> str | None:
    return _LANG_SCRIPT.get(re.split(r"[-_]", lang)[0].lower())


def normalize_or_drop(sentence: str, lang: str) -> str | Dropped:
    """The normalised sentence, or why it is dropped."""
    text = unicodedata.normalize("NFC", sentence).translate(_APOSTROPHE_LIKE)
    try:
        text = spell_numbers(text, lang).lower()
    except UnspelledNumber as err:
        return Dropped(err.kind, str(err))
    kept = "".join(ch if _is_letter(ch) or ch == APOSTROPHE else " " for ch in text)
    words = _STRAY_APOSTROPHES.sub(" ", kept).split()
    if not words:
        return Dropped(NOTHING_LEFT)
    script = _script(lang)
    foreign = [w for w in words if not _script_ok(w.replace(APOSTROPHE, ""), script)]
    if foreign:
        return Dropped(FOREIGN_LETTERS, f"{FOREIGN_LETTERS}: {' '.join(foreign)[:60]!r} in {lang} ({script.lower()})")
    return " ".join(words)


def normalize(sentence: str, lang: str) -> str | None:
    """The normalised sentence, or None when it is dropped (see normalize_or_drop for why)."""
    result = normalize_or_drop(sentence, lang)
    return None if isinstance(result, Dropped) else result
