"""Transcript normalisation: NFC, lower case, punctuation out, diacritics and inner apostrophes kept."""

import unicodedata

import pytest

from metarecipe.text import normalize


@pytest.mark.parametrize("lang, sentence, expected", [
    ("de", "Größe, Maß und „Übermaß“!", "größe maß und übermaß"),
    ("es", "¿Qué tal? ¡Muy bien, señor!", "qué tal muy bien señor"),
    ("it", "L’acqua è più buona dell'aria.", "l'acqua è più buona dell'aria"),
    ("fr", "'Bonjour', dit-il — aujourd’hui…", "bonjour dit il aujourd'hui"),
    ("pl", "Zażółć gęślą jaźń.", "zażółć gęślą jaźń"),
    ("cs", "Příliš žluťoučký kůň úpěl ďábelské ódy.", "příliš žluťoučký kůň úpěl ďábelské ódy"),
    ("ru", "Ёлка: «Да, конечно!»", "ёлка да конечно"),
    ("eo", "Ĉu vi ŝatas ĝin? Jes, ĉiam.", "ĉu vi ŝatas ĝin jes ĉiam"),
    ("pt", "Coração: não há razão.", "coração não há razão"),
    ("br", "C'hwec'h ti.", "c'hwec'h ti"),
])
def test_sentences_normalise_per_language(lang, sentence, expected):
    assert normalize(sentence, lang) == expected


def test_decomposed_input_comes_out_composed():
    decomposed = unicodedata.normalize("NFD", "Übermäßig schön")
    assert decomposed != "Übermäßig schön"
    assert normalize(decomposed, "de") == "übermäßig schön"


@pytest.mark.parametrize("lang, sentence", [
    ("de", "Es ist 5 Uhr."),         # digits: dropped, not guessed
    ("ru", "Это ok для нас."),       # Latin letters in a Cyrillic language
    ("de", "Das ist Москва."),       # Cyrillic letters in a Latin language
    ("es", " ¡¿...?! "),             # nothing left
])
def test_unspeakable_sentences_are_dropped(lang, sentence):
    assert normalize(sentence, lang) is None


def test_unknown_language_accepts_any_script():
    assert normalize("Ελληνικά, παρακαλώ!", "el") == "ελληνικά παρακαλώ"
