"""Numbers written with digits, spelled out in words of the sentence's language by num2words.

``spell_numbers(text, lang)`` replaces every number written with digits by its words: integers (with the
language's thousands separators: "1,234" in English, "1.234" or "1 234" in most other languages), decimals
with the language's decimal mark ("3.5" in English, "3,5" in French), and ordinals where the written form is
unambiguous ("1st", "2nd" in English; "1er", "2e" in French; "1º", "2ª" in Spanish, Italian and Portuguese).
Everything else in the text is left as it is. num2words 0.5.14 spells en es fr it ru de pl cs eo pt (and many
more: ``SPELLED_LANGUAGES``); text with digits in any other language raises UnspelledNumber, and so does a
number num2words cannot spell (too large).
"""

from __future__ import annotations

import functools
import re

from num2words import CONVERTER_CLASSES, num2words

from metarecipe.errors import InputError

SPELLED_LANGUAGES = frozenset(CONVERTER_CLASSES)
# languages that write decimals with a point and group thousands with a comma; the others the other way round
DECIMAL_POINT = frozenset({"en", "am", "bn", "he", "hi", "ja", "kn", "ko", "ms", "sw", "ta", "te", "th", "zh"})
ORDINAL_SUFFIXES = {
    "en": r"st|nd|rd|th",
    "fr": r"ère|ere|re|er|ème|eme|nde|nd|e",
    "es": r"\.?º|\.?ª",
    "it": r"\.?º|\.?ª",
    "pt": r"\.?º|\.?ª",
}
DIGITS_NOT_SPELLED = "digits in a language num2words does not spell"
NUMBER_NOT_SPELLED = "a number num2words cannot spell"


class UnspelledNumber(InputError, ValueError):
    """Digits that cannot be spelled out: `kind` says why (one of the constants above), `detail` which."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


def num2words_language(lang: str) -> str | None:
    """The num2words code for a language code ('pt-BR' -> 'pt_BR', 'en-US' -> 'en'), or None without one."""
    code = lang.replace("-", "_")
    if code in SPELLED_LANGUAGES:
        return code
    base = code.split("_")[0].lower()
    return base if base in SPELLED_LANGUAGES else None


@functools.cache
def _number_pattern(code: str) -> re.Pattern:
    base = code.split("_")[0]
    decimal, groups = (r"\.", ",") if base in DECIMAL_POINT else (",", ".\u00a0\u202f ")
    ordinal = ORDINAL_SUFFIXES.get(base)
    suffix = rf"|(?P<ordinal>{ordinal})(?!\w)" if ordinal else ""
    return re.compile(rf"(?<!\d)(?P<integer>\d{{1,3}}(?:[{groups}]\d{{3}})+(?!\d)|\d+)"
                      rf"(?:{decimal}(?P<fraction>\d+){suffix})?")


def _feminine(words: str) -> str:
    """The feminine of a Romance ordinal (primero -> primera, ventunesimo -> ventunesima)."""
    return re.sub(r"o\b", "a", words)


def _words(match: re.Match, code: str) -> str:
    integer = int(re.sub(r"\D", "", match["integer"]))
    ordinal = match.groupdict().get("ordinal")
    if match["fraction"] is not None:
        return num2words(float(f"{integer}.{match['fraction']}"), lang=code)
    if ordinal is None:
        return num2words(integer, lang=code)
    words = num2words(integer, lang=code, to="ordinal")
    if ordinal.endswith("ª") or (ordinal in ("re", "ère", "ere") and integer == 1):
        return "première" if code.startswith("fr") else _feminine(words)
    return words


def _spelled(text: str, match: re.Match, code: str) -> str:
    try:
        words = _words(match, code)
    except (ArithmeticError, NotImplementedError, ValueError, TypeError, IndexError) as err:
        raise UnspelledNumber(NUMBER_NOT_SPELLED, f"{match[0][:40]!r} in {code} ({type(err).__name__})") from None
    before = " " if match.start() > 0 and text[match.start() - 1].isalnum() else ""
    after = " " if match.end() < len(text) and text[match.end()].isalnum() else ""
    return f"{before}{words}{after}"


def spell_numbers(text: str, lang: str) -> str:
    """`text` with every number written in digits spelled out in `lang`; UnspelledNumber when it has digits
    and num2words does not spell `lang`, or a number it cannot spell."""
    if not re.search(r"\d", text):
        return text
    code = num2words_language(lang)
    if code is None:
        raise UnspelledNumber(DIGITS_NOT_SPELLED, lang)
    return _number_pattern(code).sub(lambda match: _spelled(text, match, code), text)
