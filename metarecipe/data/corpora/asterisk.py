"""Asterisk's core sounds: real recorded prompts with their texts, one professional speaker per language.

Layout (Debian's ``asterisk-core-sounds-<l>`` and ``asterisk-core-sounds-<l>-wav``): ``corpus_dir`` is the
sounds root (``/usr/share/asterisk/sounds``) holding ``<lang>/``, a directory or a link to a voice directory
such as ``en_US_f_Allison``; the audio of prompt ``<key>`` is ``<key>.wav`` under it (keys hold subdirectories,
``digits/1``). The texts are ``key: text`` lines (``;`` starts a comment) in ``core-sounds-<lang>.txt`` or
``.txt.gz``, found in the voice directory, else in ``text_dir`` (default
``/usr/share/doc/asterisk-core-sounds-<lang>``).

The speaker is the voice directory's name, the utterance id ``<speaker>-<lang>-<key with / as ->``, the text
normalised for the language (numbers spelled out). A prompt whose text is not what is spoken is left out and
listed with one reason: a spelled letter or symbol (``letters/``, texts of single letters, ``A.M.``, ``M I S D
N``, a lone capital letter named in a sentence), an abbreviation in capitals (``PBX``; not when the language's
texts are written in capitals), a code mixing capitals and digits (``3D``, ``H.323``), a note in brackets
anywhere (``[beep]``, ``(10 seconds of silence)``), a text that starts with its own key, characters lost to an
encoding (U+FFFD, a ``?`` followed by a lower-case word), a symbol that is read out (``#``, ``*``, ``/``), digits
that num2words does not spell, letters outside the language's script after normalisation, a key listed twice
with two texts (both) or twice with one (the second), a key that cannot make an utterance id, missing,
unreadable, too short or silent audio (peak under -50 dBFS), or the same recording as another prompt. Audio
files without a text line are listed too.

Splits are by text: prompts whose normalised texts are equal always fall in the same split, so no test
sentence is in train. The texts are laid end to end in the order of a hash of (seed, text) and the line is
cut so that ``train_share``, ``dev_share`` and ``test_share`` of the speech (0.7, 0.1, 0.2) fall in train, dev
and test, whatever the length of a prompt: the same corpus and seed always give the same splits.
A skipped row is listed in the ``skipped.tsv`` of the split its text (or key) falls in, after one comment line
per reason with its count; a summary per language (prompts, kept, minutes per split, skipped per reason) is
printed. Every split is validated before any is written.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarecipe.data.audio import AudioError, file_duration, read_audio_file
from metarecipe.data.corpora import DataPrepError, corpus_file, skipped_lines, write_prepared
from metarecipe.data.datadir import DataDir, id_problem
from metarecipe.text.normalize import Dropped, normalize_or_drop

SPLITS = ("train", "dev", "test")
DOC_DIR = Path("/usr/share/doc")
MIN_SECONDS = 0.2
SILENCE_DBFS = -50.0
BRACKETS = re.compile(r"[\[({<][^\])}>]*[\])}>]?|[\])}>]")
READ_OUT_SYMBOLS = set("#%&*@/\\")


@dataclass(frozen=True)
class Prompt:
    key: str
    text: str


@dataclass(frozen=True)
class Recording:
    utt: str
    path: Path
    seconds: float
    text: str  # normalised


def _why(kind: str, detail: str) -> Dropped:
    return Dropped(kind, f"{kind}: {detail}")


# --- finding the corpus ---------------------------------------------------------------------------------------


def text_file(corpus_dir: Path, lang: str, text_dir: str | None) -> Path:
    """core-sounds-<lang>.txt(.gz) in <corpus_dir>/<lang>, else in /usr/share/doc/asterisk-core-sounds-<lang>
    (only in text_dir when it is given); DataPrepError naming the paths and the package to install otherwise."""
    folders = [Path(text_dir)] if text_dir else [corpus_dir / lang, DOC_DIR / f"asterisk-core-sounds-{lang}"]
    candidates = [folder / f"core-sounds-{lang}.txt{ext}" for folder in folders for ext in ("", ".gz")]
    for path in candidates:
        if path.is_file():
            return path
    raise DataPrepError(f"no prompt texts for '{lang}': none of {', '.join(map(str, candidates))} exists "
                        f"(apt-get install asterisk-core-sounds-{lang})")


def voice_dir(corpus_dir: Path, lang: str) -> Path:
    """The voice directory <corpus_dir>/<lang> leads to; DataPrepError naming it and the package otherwise."""
    path = corpus_dir / lang
    if not path.is_dir():
        raise DataPrepError(f"{path}: no audio directory for '{lang}' (apt-get install asterisk-core-sounds-"
                            f"{lang}-wav)")
    return path.resolve()


def default_langs(corpus_dir: Path, text_dir: str | None) -> list[str]:
    langs = []
    for entry in sorted(corpus_dir.iterdir()):
        try:
            text_file(corpus_dir, entry.name, text_dir)
        except DataPrepError:
            continue
        if entry.is_dir():
            langs.append(entry.name)
    if not langs:
        raise DataPrepError(f"{corpus_dir}: no <lang>/ with prompt texts (is this the Asterisk sounds directory? "
                            "apt-get install asterisk-core-sounds-en asterisk-core-sounds-en-wav)")
    return langs


# --- reading the texts ----------------------------------------------------------------------------------------


def _text_lines(path: Path) -> list[bytes]:
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataPrepError(f"{path}: cannot read ({err})") from None
    return data.split(b"\n")


def read_prompts(path: Path) -> tuple[list[Prompt], list[tuple[str, Dropped]], int]:
    """The prompts of a core-sounds text in file order, the lines left out (where, why) and the number of keys.
    A key listed with two different texts is left out; one listed twice with the same text keeps its first
    line."""
    lines: dict[str, list[tuple[str, str]]] = {}
    skipped = []
    for number, raw in enumerate(_text_lines(path), start=1):
        where = f"{path.name}:{number}"
        try:
            line = raw.decode("utf-8").lstrip("\ufeff").strip()
        except UnicodeDecodeError as err:
            skipped.append((where, _why("text line not UTF-8", f"{err.reason} at byte {err.start}")))
            continue
        if not line or line.startswith(";"):
            continue
        key, colon, text = line.partition(":")
        if not colon or not key.strip():
            skipped.append((where, _why("not a 'key: text' line", line[:60])))
            continue
        lines.setdefault(key.strip(), []).append((where, text.strip()))
    prompts = []
    for key, found in lines.items():
        texts = {text for _, text in found}
        if len(texts) > 1:
            skipped += [(key, _why("key listed with different texts", f"{where}: {text[:40]!r}"))
                        for where, text in found]
            continue
        prompts.append(Prompt(key, found[0][1]))
        skipped += [(where, _why("duplicate line", f"key {key} again")) for where, _ in found[1:]]
    return prompts, skipped, len(lines)


# --- rules on the written text --------------------------------------------------------------------------------

_WORDS = re.compile(r"[^\W\d_]+")


def written_in_capitals(prompts: list[Prompt]) -> bool:
    """Whether a language's texts are written in capitals (most letters upper case)."""
    letters = [ch for prompt in prompts for ch in prompt.text if ch.isalpha()]
    return sum(ch.isupper() for ch in letters) > len(letters) / 2


def _spelled(text: str) -> str | None:
    """The spelled letters in a text, or None: dotted letters (A.M.), two or more capital letters in a row
    (M I S D N), or a capital letter named inside a sentence ('for Q,')."""
    words = list(_WORDS.finditer(text))
    if dotted := re.search(r"(?<!\w)(?:[^\W\d_]\.){2,}", text):
        return dotted[0]
    for i, word in enumerate(words):
        if len(word[0]) != 1 or not word[0].isupper():
            continue
        before, after = words[i - 1] if i else None, words[i + 1] if i + 1 < len(words) else None
        if after is not None and len(after[0]) == 1 and after[0].isupper() and \
                not text[word.end():after.start()].strip(" ."):
            return text[word.start():after.end()]
        rest = text[word.end():].lstrip()
        if before is not None and before[0].islower() and not text[before.end():word.start()].strip() and \
                (not rest or rest[0] in ",.;:!?"):
            return word[0]
    return None


def _encoding_damage(text: str) -> str | None:
    """U+FFFD, or a '?' followed by a lower-case word (a question mark ends a sentence), or None."""
    if "\ufffd" in text:
        return "U+FFFD"
    damaged = (m for m in re.finditer(r"\S*\?\s*(?=[^\W\d_])", text) if text[m.end()].islower())
    return next((m[0].strip() for m in damaged), None)


def _read_out_symbol(text: str) -> str | None:
    return next((ch for ch in text if ch in READ_OUT_SYMBOLS or unicodedata.category(ch) in ("Sm", "Sc", "So")),
                None)


def _capitals(text: str, capitals_text: bool) -> Dropped | None:
    if not capitals_text and (caps := next((w for w in _WORDS.findall(text) if len(w) > 1 and w.isupper()), None)):
        return _why("abbreviation in capitals", caps)
    for code in re.finditer(r"([^\W\d_])[.-]?\d|\d([^\W\d_])", text):
        if (code[1] or code[2]).isupper():
            return _why("code of capitals and digits", code[0])
    return None


def text_problem(prompt: Prompt, capitals_text: bool) -> Dropped | None:
    """Why a prompt's text is not what its recording says, or None."""
    text = prompt.text
    if prompt.key.split("/")[0] == "letters":
        return _why("spelled letter or symbol", "a prompt of letters/")
    if not text:
        return Dropped("empty text")
    if all(len(word) == 1 for word in _WORDS.findall(text) or ["too long"]):
        return _why("single letters (spelled, or a one-letter word said alone)", text[:40])
    if text.startswith(f"{prompt.key}:"):
        return _why("text starts with its own key", text[:40])
    if note := BRACKETS.search(text):
        return _why("note in brackets, not speech", note[0][:40])
    if damage := _encoding_damage(text):
        return _why("characters lost to an encoding", damage)
    if symbol := _read_out_symbol(text):
        return _why("a symbol that is read out", repr(symbol))
    if prompt.key.split("/")[0] == "phonetic" and any(len(word) == 1 for word in _WORDS.findall(text)):
        return _why("spelled letters", "a letter in a prompt of phonetic/")
    if spelled := _spelled(text):
        return _why("spelled letters", spelled[:40])
    return _capitals(text, capitals_text)


# --- rules on the audio ---------------------------------------------------------------------------------------


def recording(voice: Path, key: str) -> tuple[Path, float, str] | Dropped:
    """(the prompt's wav file, its seconds, a digest of its bytes), or why it cannot be used."""
    path = corpus_file(voice, f"{key}.wav")
    if isinstance(path, str):
        return _why("audio path refused", path)
    if not path.is_file():
        return _why("missing audio", str(path))
    try:
        seconds = file_duration(path)
        samples = read_audio_file(path, sample_rate=8000) if seconds >= MIN_SECONDS else None
    except AudioError as err:
        return _why("unreadable audio", str(err))
    if samples is None:
        return _why("audio too short", f"{seconds:.2f} s, under {MIN_SECONDS} s")
    peak = 20 * np.log10(max(float(np.abs(samples).max()), 1e-10))
    if peak < SILENCE_DBFS:
        return _why("silence", f"peak {peak:.0f} dBFS")
    return path, seconds, hashlib.sha256(path.read_bytes()).hexdigest()


def audio_keys(voice: Path) -> set[str]:
    """The keys of every .wav file under a voice directory (links to directories not followed)."""
    keys = set()
    for folder, _, files in os.walk(voice):
        relative = Path(folder).relative_to(voice)
        keys.update((relative / name[:-4]).as_posix() for name in files if name.endswith(".wav"))
    return keys


# --- one language ---------------------------------------------------------------------------------------------


@dataclass
class Language:
    lang: str
    speaker: str
    prompts: int
    kept: list[Recording]
    skipped: list[tuple[str, Dropped, str]]  # (where, why, text or key that places it in a split)


def _utterance(prompt: Prompt, speaker: str, lang: str, voice: Path, taken: dict[str, str],
               digests: dict[str, str], capitals_text: bool) -> Recording | Dropped:
    if problem := text_problem(prompt, capitals_text):
        return problem
    utt = f"{speaker}-{lang}-{prompt.key.replace('/', '-')}"
    if problem := id_problem(utt):
        return _why("key not usable in an utterance id", f"{prompt.key!r} {problem}")
    if utt in taken:
        return _why("key makes the utterance id of another", taken[utt])
    text = normalize_or_drop(prompt.text, lang)
    if isinstance(text, Dropped):
        return text
    found = recording(voice, prompt.key)
    if isinstance(found, Dropped):
        return found
    path, seconds, digest = found
    if digest in digests:
        return _why("same recording as another prompt", digests[digest])
    taken[utt], digests[digest] = prompt.key, prompt.key
    return Recording(utt, path, seconds, text)


def read_language(corpus_dir: Path, lang: str, text_dir: str | None) -> Language:
    """Every prompt of one language, kept or skipped with its reason."""
    voice = voice_dir(corpus_dir, lang)
    texts = text_file(corpus_dir, lang, text_dir)
    speaker = voice.name
    for name, value in (("language", lang), ("voice directory name", speaker)):
        if problem := id_problem(value):
            raise DataPrepError(f"{corpus_dir / lang}: the {name} {value!r} {problem}: not usable as an id")
    prompts, line_problems, keys = read_prompts(texts)
    skipped = [(where, why, where) for where, why in line_problems]
    capitals_text = written_in_capitals(prompts)
    kept, taken, digests = [], {}, {}
    for prompt in prompts:
        found = _utterance(prompt, speaker, lang, voice, taken, digests, capitals_text)
        if isinstance(found, Dropped):
            text = normalize_or_drop(prompt.text, lang)
            skipped.append((prompt.key, found, prompt.text if isinstance(text, Dropped) else text))
        else:
            kept.append(found)
    listed = {prompt.key for prompt in prompts} | {where for where, _, _ in skipped}
    skipped += [(key, Dropped("audio without a text line"), key) for key in sorted(audio_keys(voice) - listed)]
    return Language(lang, speaker, keys, kept, skipped)


# --- splits by text -------------------------------------------------------------------------------------------


def _hash(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\t{text}".encode()).digest()[:8], "big")


def _by_share(point: float, shares: dict[str, float]) -> str:
    """The split that a point in [0, 1) falls in when [0, 1) is cut by the shares in split order."""
    edge = 0.0
    for split, share in shares.items():
        edge += share
        if point < edge:
            return split
    return next(split for split, share in reversed(shares.items()) if share > 0)


def assign_splits(seconds_by_text: dict[str, float], shares: dict[str, float], seed: int) -> dict[str, str]:
    """{text: split}: the texts laid end to end in the order of their hash with the seed, the line cut into the
    shares, and each text in the split its middle falls in. Each split gets its share of the speech to within
    half a text at each cut, and a text's chance of a split does not depend on its length."""
    total = sum(seconds_by_text.values())
    splits, position = {}, 0.0
    for text in sorted(seconds_by_text, key=lambda t: (_hash(seed, t), t)):
        splits[text] = _by_share((position + seconds_by_text[text] / 2) / total, shares)
        position += seconds_by_text[text]
    return splits


def _split_of(text: str, splits: dict[str, str], shares: dict[str, float], seed: int) -> str:
    """The split of a text: the one assigned, else the one its hash falls in by the shares."""
    return splits[text] if text in splits else _by_share(_hash(seed, text) / 2 ** 64, shares)


def _shares(train_share, dev_share, test_share) -> dict[str, float]:
    try:
        shares = {"train": float(train_share), "dev": float(dev_share), "test": float(test_share)}
    except ValueError:
        raise DataPrepError(f"asterisk: train_share, dev_share and test_share must be numbers, got "
                            f"{train_share!r}, {dev_share!r}, {test_share!r}") from None
    if any(not share >= 0 for share in shares.values()) or not sum(shares.values()) > 0:
        raise DataPrepError(f"asterisk: split shares must be >= 0 with a positive sum, got {shares}")
    return {split: share / sum(shares.values()) for split, share in shares.items()}


def _summary(language: Language, splits: dict[str, str]) -> str:
    minutes = Counter()
    for rec in language.kept:
        minutes[splits[rec.text]] += rec.seconds / 60
    lines = [f"asterisk {language.lang} (speaker {language.speaker}): {language.prompts} prompts, "
             f"{len(language.kept)} kept; minutes " + ", ".join(f"{s} {minutes[s]:.1f}" for s in SPLITS)]
    counts = Counter(why.kind for _, why, _ in language.skipped)
    lines += [f"  skipped {count:4d}  {kind}" for kind, count in sorted(counts.items(), key=lambda kc: -kc[1])]
    return "\n".join(lines)


def split_data(language: Language, splits: dict[str, str], shares: dict[str, float], seed: int,
               split: str) -> tuple[DataDir, list[str]]:
    """One split of a language as a data directory, and the lines of its skipped.tsv."""
    data = DataDir({}, {}, {})
    for rec in language.kept:
        if splits[rec.text] == split:
            data.wav_scp[rec.utt], data.utt2dur[rec.utt] = str(rec.path), rec.seconds
            data.text[rec.utt], data.utt2spk[rec.utt], data.utt2lang[rec.utt] = rec.text, language.speaker, \
                language.lang
    if not data.utt2spk:
        raise DataPrepError(f"asterisk {language.lang}: no prompt falls in {split} ({len(language.kept)} kept; "
                            f"shares {shares})")
    skipped = [(where, why) for where, why, text in language.skipped
               if _split_of(text, splits, shares, seed) == split]
    return data, skipped_lines(skipped)


def prepare(corpus_dir, out_dir, langs=None, splits=SPLITS, seed=0, train_share=0.7, dev_share=0.1,
            test_share=0.2, text_dir=None) -> dict[str, Path]:
    """Data directories out_dir/<lang>/<split> for the Asterisk sounds at corpus_dir; langs defaults to every
    <lang> there with prompt texts. Every split is read and validated before any is written."""
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    if not corpus_dir.is_dir():
        raise DataPrepError(f"{corpus_dir}: not a directory (the Asterisk sounds, e.g. /usr/share/asterisk/sounds)")
    if unknown := [s for s in splits if s not in SPLITS]:
        raise DataPrepError(f"asterisk: unknown split {', '.join(unknown)} (the splits are {', '.join(SPLITS)})")
    try:
        seed = int(seed)
    except ValueError:
        raise DataPrepError(f"asterisk: seed must be an integer, got {seed!r}") from None
    shares = _shares(train_share, dev_share, test_share)
    prepared = {}
    for lang in langs or default_langs(corpus_dir, text_dir):
        language = read_language(corpus_dir, lang, text_dir)
        seconds_by_text = Counter()
        for rec in language.kept:
            seconds_by_text[rec.text] += rec.seconds
        assigned = assign_splits(seconds_by_text, shares, seed)
        print(_summary(language, assigned))
        prepared.update({f"{lang}/{split}": split_data(language, assigned, shares, seed, split) for split in splits})
    return write_prepared(prepared, out_dir)
