"""Numbers in digits spelled out per language by num2words: integers, thousands, decimals, ordinals."""

import pytest

from metarecipe.text.numbers import (
    DIGITS_NOT_SPELLED,
    NUMBER_NOT_SPELLED,
    UnspelledNumber,
    num2words_language,
    spell_numbers,
)


@pytest.mark.parametrize("lang, text, expected", [
    ("en", "press 1", "press one"),
    ("es", "marque 1 o 2", "marque uno o dos"),
    ("fr", "appuyez sur 3", "appuyez sur trois"),
    ("it", "premere 21", "premere ventuno"),
    ("ru", "нажмите 1, 2 или 40", "нажмите один, два или сорок"),
    ("de", "Taste 7", "Taste sieben"),
    ("pl", "naciśnij 5", "naciśnij pięć"),
    ("cs", "stiskněte 9", "stiskněte devět"),
    ("eo", "premu 8", "premu ok"),
    ("pt", "prima 2", "prima dois"),
    ("pt-BR", "disque 0", "disque zero"),
])
def test_digits_become_words_of_the_language(lang, text, expected):
    assert spell_numbers(text, lang) == expected


@pytest.mark.parametrize("lang, text, expected", [
    ("en", "1,234 calls", "one thousand, two hundred and thirty-four calls"),
    ("en", "3.5 minutes", "three point five minutes"),
    ("de", "1.234,75 Euro", "eintausendzweihundertvierunddreißig Komma sieben fünf Euro"),
    ("fr", "3,5 secondes", "trois virgule cinq secondes"),
    ("fr", "10 000 appels", "dix mille appels"),
    ("it", "2,5 secondi", "due virgola cinque secondi"),
    ("ru", "1 000 000 рублей", "один миллион рублей"),
    ("es", "3,25 pesos", "tres punto dos cinco pesos"),
])
def test_thousands_and_decimals_follow_the_language(lang, text, expected):
    assert spell_numbers(text, lang) == expected


@pytest.mark.parametrize("lang, text, expected", [
    ("en", "the 1st and the 22nd", "the first and the twenty-second"),
    ("fr", "le 1er, la 1re et le 3e", "le premier, la première et le troisième"),
    ("es", "el 2º y la 1ª", "el segundo y la primera"),
    ("it", "la 3ª volta", "la terza volta"),
])
def test_ordinals_where_the_written_form_says_so(lang, text, expected):
    assert spell_numbers(text, lang) == expected


def test_words_glued_to_a_number_are_kept_apart():
    assert spell_numbers("28Kilobit", "it") == "ventotto Kilobit"
    assert spell_numbers("H323", "en") == "H three hundred and twenty-three"


def test_a_language_num2words_does_not_spell_is_a_clear_error_only_with_digits():
    assert num2words_language("ga") is None
    assert spell_numbers("Dia duit.", "ga") == "Dia duit."
    with pytest.raises(UnspelledNumber, match="^digits in a language num2words does not spell: ga$") as err:
        spell_numbers("Brúigh 1.", "ga")
    assert (err.value.kind, err.value.detail) == (DIGITS_NOT_SPELLED, "ga")


def test_a_number_too_large_to_spell_is_a_clear_error():
    with pytest.raises(UnspelledNumber) as err:
        spell_numbers("9" * 400, "en")
    assert err.value.kind == NUMBER_NOT_SPELLED


@pytest.mark.parametrize("lang, code", [("en-US", "en"), ("pt-BR", "pt_BR"), ("fr_CA", "fr"), ("ru", "ru"),
                                        ("kab", None)])
def test_language_codes_map_to_num2words(lang, code):
    assert num2words_language(lang) == code
