"""The built-in multilingual demo corpus, generated offline in Common Voice layout.

Sentences come from the Debian fortune packages of each language (normalised, de-duplicated, 3 to 20
words); espeak-ng speaks them with many distinct speakers (voice variant x pitch x rate, one client_id each);
noise is mixed in at a random SNR and every clip is written as mp3. The release has the TSV columns of current
Common Voice releases and disjoint speakers (and sentences) across train, dev and test, so it is read back by
the `commonvoice` plug-in like any real release. The same seed gives the same corpus.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from metarecipe.data.corpora import DataPrepError
from metarecipe.text.normalize import normalize

FORTUNES = Path("/usr/share/games/fortunes")
# language: (espeak-ng voice, fortune files or folders under FORTUNES, Debian package)
LANGUAGES = {
    "de": ("de", ["de"], "fortunes-de"),
    "es": ("es", ["es"], "fortunes-es"),
    "it": ("it", ["it"], "fortunes-it"),
    "pl": ("pl", ["pl"], "fortunes-pl"),
    "cs": ("cs", ["cs"], "fortunes-cs"),
    "ru": ("ru", ["ru"], "fortunes-ru"),
    "pt": ("pt-br", ["brasil"], "fortunes-br"),
    "eo": ("eo", ["eo"], "fortunes-eo"),
}
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "croak", "whisper"]
TSV_COLUMNS = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
               "gender", "accents", "variant", "locale", "segment"]
PITCHES = range(25, 80, 9)
RATES = range(130, 200, 12)  # words per minute
SAMPLE_RATE = 16000
SPLIT_SPEAKERS = {"train": 16, "dev": 4, "test": 4}
SPLIT_SHARE = {"train": 0.7, "dev": 0.15, "test": 0.15}


@dataclass(frozen=True)
class Speaker:
    client_id: str
    variant: str
    pitch: int
    rate: int


def require_tools(langs, languages: dict = LANGUAGES, what: str = "the demo corpus") -> None:
    """DataPrepError with the exact apt-get command when espeak-ng or a fortune package is missing; `languages`
    is a table like LANGUAGES, `what` names the corpus in the message."""
    missing = [] if shutil.which("espeak-ng") else ["espeak-ng"]
    missing += [languages[lang][2] for lang in langs
                if not all((FORTUNES / p).exists() for p in languages[lang][1])]
    if missing:
        raise DataPrepError(f"{what} needs Debian packages that are missing; install them with:\n"
                            f"  apt-get update && apt-get install -y {' '.join(missing)}")


def _fortune_files(lang: str, languages: dict = LANGUAGES) -> list[Path]:
    """The fortune text files of a language; a non-empty .u8 (UTF-8) twin replaces its legacy original."""
    files = []
    for name in languages[lang][1]:
        path = FORTUNES / name
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        recoded = {c.with_suffix("") for c in candidates if c.suffix == ".u8" and c.stat().st_size > 0}
        files += [c for c in candidates if c.is_file() and c.stat().st_size > 0 and c.suffix != ".dat"
                  and c not in recoded]
    return files


def sentences(lang: str, min_words: int = 3, max_words: int = 20, languages: dict = LANGUAGES) -> list[str]:
    """Normalised, de-duplicated sentences of the language's fortunes (files from `languages`), in a fixed order."""
    seen, out = set(), []
    for path in _fortune_files(lang, languages):
        text = path.read_bytes().decode("utf-8", errors="replace")
        for entry in text.split("\n%\n"):
            for piece in entry.replace("\n", " ").replace("!", ".").replace("?", ".").split(". "):
                sentence = normalize(piece, lang)
                if sentence and min_words <= len(sentence.split()) <= max_words and "\ufffd" not in piece \
                        and sentence not in seen:
                    seen.add(sentence)
                    out.append(sentence)
    return out


def voice_combos(rng: random.Random, count: int) -> list[tuple[str, int, int]]:
    """`count` distinct (voice variant, pitch, rate) combinations drawn by rng."""
    return rng.sample([(v, p, r) for v in VARIANTS for p in PITCHES for r in RATES], count)


def speakers(lang: str, seed: int) -> dict[str, list[Speaker]]:
    """Disjoint speakers per split, each a voice variant x pitch x rate with a client_id."""
    combos = voice_combos(random.Random(f"{seed}-{lang}-speakers"), sum(SPLIT_SPEAKERS.values()))
    out, start = {}, 0
    for split, count in SPLIT_SPEAKERS.items():
        out[split] = [Speaker(hashlib.sha1(f"{seed}-{lang}-{v}-{p}-{r}".encode()).hexdigest(), v, p, r)
                      for v, p, r in combos[start:start + count]]
        start += count
    return out


def synthesize(text: str, voice: str, speaker: Speaker) -> np.ndarray:
    """espeak-ng speech (N,) float32 at SAMPLE_RATE; the text goes through stdin."""
    result = subprocess.run(["espeak-ng", "-v", f"{voice}+{speaker.variant}", "-p", str(speaker.pitch), "-s",
                             str(speaker.rate), "--stdout"], input=text.encode("utf-8"), capture_output=True)
    if result.returncode != 0 or not result.stdout:
        raise DataPrepError(f"espeak-ng failed for voice {voice}: {result.stderr.decode(errors='replace')[-200:]}")
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    return soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)


def add_noise(speech: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Speech plus coloured noise (white noise with a random spectral tilt) at snr_db."""
    spectrum = np.fft.rfft(rng.standard_normal(speech.size))
    freqs = np.arange(spectrum.size) / max(spectrum.size - 1, 1)  # 0 .. Nyquist
    spectrum /= (1.0 + freqs / rng.uniform(0.02, 1.0)) ** rng.uniform(0.0, 1.5)
    noise = np.fft.irfft(spectrum, n=speech.size)
    power = float(np.mean(speech**2)) or 1e-8
    noise *= np.sqrt(power / (float(np.mean(noise**2)) * 10 ** (snr_db / 10)))
    mixed = speech + noise.astype(np.float32)
    return (mixed / max(1.0, float(np.abs(mixed).max()) / 0.99)).astype(np.float32)


def make_language(out_dir: str, lang: str, minutes: float, seed: int) -> dict[str, int]:
    """Writes <out_dir>/<lang>/{clips/*.mp3, *.tsv}; returns clips per split."""
    lang_dir = Path(out_dir) / lang
    (lang_dir / "clips").mkdir(parents=True, exist_ok=True)
    voice = LANGUAGES[lang][0]
    pool = sentences(lang)
    random.Random(f"{seed}-{lang}-sentences").shuffle(pool)
    split_speakers = speakers(lang, seed)
    rows, counts, used = {split: [] for split in SPLIT_SHARE}, {}, 0
    for split, share in SPLIT_SHARE.items():
        budget, spoken, index = minutes * 60 * share, 0.0, 0
        while spoken < budget and used < len(pool):
            text, used = pool[used], used + 1
            speaker = split_speakers[split][index % len(split_speakers[split])]
            rng = np.random.default_rng([seed, sum(lang.encode()), used])
            audio = add_noise(synthesize(text, voice, speaker), rng, float(rng.uniform(5.0, 30.0)))
            name = f"common_voice_{lang}_{seed}{used:06d}.mp3"
            soundfile.write(lang_dir / "clips" / name, audio, SAMPLE_RATE, format="MP3")
            spoken += audio.size / SAMPLE_RATE
            index += 1
            sentence_id = hashlib.sha1(text.encode()).hexdigest()
            rows[split].append([speaker.client_id, name, sentence_id, text, "", "2", "0", "", "", "", "", lang, ""])
        counts[split] = index
    header = "\t".join(TSV_COLUMNS)
    for split, split_rows in rows.items():
        (lang_dir / f"{split}.tsv").write_text("\n".join([header] + ["\t".join(r) for r in split_rows]) + "\n",
                                               encoding="utf-8")
    every = [r for split_rows in rows.values() for r in split_rows]
    (lang_dir / "validated.tsv").write_text("\n".join([header] + ["\t".join(r) for r in every]) + "\n",
                                            encoding="utf-8")
    for split in ("invalidated", "other"):
        (lang_dir / f"{split}.tsv").write_text(header + "\n", encoding="utf-8")
    return counts


def make_demo_corpus(out_dir, langs=tuple(LANGUAGES), minutes: float = 30.0, seed: int = 0, jobs: int = 2) -> dict:
    """Generates the demo release at out_dir, one language per process; returns clips per language and split."""
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown:
        raise DataPrepError(f"no demo language {unknown}; choose from {sorted(LANGUAGES)}")
    require_tools(langs)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {lang: pool.submit(make_language, str(out_dir), lang, minutes, seed) for lang in langs}
        return {lang: future.result() for lang, future in futures.items()}
