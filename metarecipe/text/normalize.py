"""Transcript normalisation shared by data preparation, token tables and LM text.

``normalize(sentence, lang)`` returns the sentence in Unicode NFC, lower case, with punctuation and symbols
replaced by spaces, letters with diacritics kept, and apostrophes kept inside words (l'eau, don't) after
mapping the typographic ones to U+0027. A sentence that cannot be spoken as written is dropped (None): one
with digits (numbers are read differently in every language), one with letters outside the language's
script, or one left empty.
"""

from __future__ import annotations

import re
import unicodedata

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


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LM"


def _script_ok(word: str, script: str | None) -> bool:
    return script is None or all(
        unicodedata.category(ch)[0] == "M" or unicodedata.name(ch, "").startswith(script) for ch in word)


def normalize(sentence: str, lang: str) -> str | None:
    """The normalised sentence, or None when it is dropped (digits, foreign script, nothing left)."""
    text = unicodedata.normalize("NFC", sentence).translate(_APOSTROPHE_LIKE).lower()
    if any(unicodedata.category(ch) == "Nd" for ch in text):
        return None
    kept = "".join(ch if _is_letter(ch) or ch == APOSTROPHE else " " for ch in text)
    kept = _STRAY_APOSTROPHES.sub(" ", kept)
    words = kept.split()
    script = _LANG_SCRIPT.get(lang.split("-")[0].lower())
    if not words or not all(_script_ok(w.replace(APOSTROPHE, ""), script) for w in words):
        return None
    return " ".join(words)
