"""Transcript normalisation: NFC, lower case, punctuation out, diacritics and inner apostrophes kept."""

import unicodedata

import pytest

from metarecipe.text import normalize
from metarecipe.text.normalize import Dropped, normalize_or_drop


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


@pytest.mark.parametrize("lang, sentence, expected", [
    ("de", "Es ist 5 Uhr.", "es ist fünf uhr"),
    ("en", "Press 1, then 2.", "press one then two"),
    ("fr", "Le 1er appel coûte 3,5 euros.", "le premier appel coûte trois virgule cinq euros"),
    ("ru", "Нажмите 1.", "нажмите один"),
    ("pt-BR", "Disque 0.", "disque zero"),
])
def test_numbers_are_spelled_out_not_dropped(lang, sentence, expected):
    assert normalize(sentence, lang) == expected


@pytest.mark.parametrize("lang, sentence, reason", [
    ("ga", "Brúigh 1.", "digits in a language num2words does not spell: ga"),
    ("ru", "Это ok для нас.", "letters outside the language's script: 'ok' in ru (cyrillic)"),
    ("de", "Das ist Москва.", "letters outside the language's script: 'москва' in de (latin)"),
    ("es", " ¡¿...?! ", "nothing left after normalisation"),
])
def test_unspeakable_sentences_are_dropped_with_their_reason(lang, sentence, reason):
    assert normalize(sentence, lang) is None
    dropped = normalize_or_drop(sentence, lang)
    assert isinstance(dropped, Dropped) and str(dropped) == reason


def test_unknown_language_accepts_any_script():
    assert normalize("Ελληνικά, παρακαλώ!", "el") == "ελληνικά παρακαλώ"
