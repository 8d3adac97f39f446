"""Built-in speaker and accent task corpora: synthetic speech (espeak-ng) as Kaldi data directories.

Each meta-learning task is a speaker (kind "speaker": Spanish, Italian and German speakers, each an espeak-ng
voice variant x pitch x rate as in the demo corpus) or an English accent (kind "accent": espeak-ng's regional
English voices, each spoken by several such speakers). The targets are unseen speakers (accents). Sentences come
from the Debian fortunes, drawn without reuse from one shuffled pool per language, so that source train, dev and
every target's train and test share no sentence; noise is mixed in at a random SNR of 15-30 dB. Layout:

    OUT/audio/<utt>.flac                  16 kHz mono
    OUT/source/{train,dev}                the source tasks (dev: other speakers of the same languages or accents)
    OUT/targets/<target>/{train,test}     one per unseen speaker or accent: >= 2.6 min train, ~1.2 min test
    OUT/targets/list                      the target names, one a line
    OUT/corpus.json                       what every task and target is (the speech is synthetic)

Data dirs hold wav.scp, text, utt2spk, spk2utt, utt2dur, utt2lang and, for accents, utt2accent. Every file is
written atomically: the audio first, then the data dirs, then targets/list and corpus.json. The same seed gives
the same corpus, whatever the number of jobs.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import zlib
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile

from metarecipe.data.corpora import DataPrepError
from metarecipe.data.datadir import DataDir, write_data_dir
from metarecipe.data.demo_corpus import (
    LANGUAGES,
    SAMPLE_RATE,
    Speaker,
    add_noise,
    require_tools,
    sentences,
    synthesize,
    voice_combos,
)
from metarecipe.io.atomic import write_atomic, write_text_atomic

KINDS = ("speaker", "accent")
# language: (espeak-ng voice, fortune files under /usr/share/games/fortunes, Debian package)
SENTENCE_SOURCES = {lang: LANGUAGES[lang] for lang in ("es", "it", "de")} | {
    "en": ("en", ["fortunes", "literature", "riddles"], "fortunes-min")}
SNR_DB = (15.0, 30.0)
MARGIN = 1.25  # words handed to a worker, over those its speakers' rate needs for the seconds it lacks


@dataclass(frozen=True)
class Design:
    """What a corpus holds. Speaker kind: `sources` are languages and each target is a speaker of one; accent kind:
    `sources` and `targets` are espeak-ng accents. Speaker counts are per language or accent."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    source: int  # source speakers (meta-training tasks or speakers of a source accent)
    dev: int  # dev speakers
    target: int  # speaker kind: target speakers per language; accent kind: speakers of each target accent
    source_seconds: float  # of speech per source speaker
    dev_seconds: float  # per dev speaker
    train_seconds: float  # per target
    test_seconds: float  # per target


DESIGNS = {
    ("speaker", False): Design(("es", "it", "de"), (), 10, 2, 4, 72.0, 30.0, 156.0, 72.0),
    ("accent", False): Design(("en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbcwmd"),
                              ("en-gb-scotland", "en-gb-x-gbclan", "en-029"), 6, 2, 3, 60.0, 30.0, 156.0, 72.0),
    ("speaker", True): Design(("es", "it"), (), 3, 1, 1, 20.0, 10.0, 40.0, 20.0),
    ("accent", True): Design(("en-us", "en-gb"), ("en-gb-scotland", "en-029"), 3, 1, 2, 20.0, 10.0, 40.0, 20.0),
}


@dataclass(frozen=True)
class Portion:
    """`seconds` of speech for one data dir (`part`, relative to OUT) by `speakers` in turn, in one voice."""

    part: str
    lang: str  # language of the sentences, and of the pool they come from
    voice: str  # espeak-ng voice
    accent: str | None
    speakers: tuple[Speaker, ...]
    seconds: float


@dataclass(frozen=True)
class Job:
    """What one worker speaks: sentences (index in the pool, text) of a portion until `seconds` of speech."""

    out_dir: str
    portion: Portion
    sentences: tuple[tuple[int, str], ...]
    seconds: float
    turn: int  # utterances the portion already has (whose speaker is next)
    seed: int


class Spoken(NamedTuple):
    utt: str
    speaker: str
    text: str
    seconds: float
    index: int  # of the sentence in its pool


def speaker_id(prefix: str, variant: str, pitch: int, rate: int) -> str:
    """A short, filesystem-safe speaker id: es_m3_p43_r154."""
    return f"{prefix}_{variant}_p{pitch}_r{rate}"


def speaker_portions(design: Design, seed: int) -> list[Portion]:
    """Per language: one portion per source and dev speaker, and a train and a test portion per target speaker."""
    portions = []
    for lang in design.sources:
        voice = SENTENCE_SOURCES[lang][0]
        combos = voice_combos(random.Random(f"{seed}-{lang}-variation"), design.source + design.dev + design.target)
        people = [Speaker(speaker_id(lang, *combo), *combo) for combo in combos]
        for person in people[:design.source]:
            portions.append(Portion("source/train", lang, voice, None, (person,), design.source_seconds))
        for person in people[design.source:design.source + design.dev]:
            portions.append(Portion("source/dev", lang, voice, None, (person,), design.dev_seconds))
        for person in people[design.source + design.dev:]:
            portions += [Portion(f"targets/{person.client_id}/train", lang, voice, None, (person,),
                                 design.train_seconds),
                         Portion(f"targets/{person.client_id}/test", lang, voice, None, (person,),
                                 design.test_seconds)]
    return portions


def accent_portions(design: Design, seed: int) -> list[Portion]:
    """One portion per source and dev speaker of each source accent; a train and a test portion per target
    accent, both spoken by its speakers in turn. No two speakers share a voice variant x pitch x rate."""
    count = len(design.sources) * (design.source + design.dev) + len(design.targets) * design.target
    combos = iter(voice_combos(random.Random(f"{seed}-en-accents"), count))

    def people(accent: str, n: int) -> tuple[Speaker, ...]:
        return tuple(Speaker(speaker_id(accent, *combo), *combo) for combo in islice(combos, n))

    portions = []
    for accent in design.sources:
        for part, n, seconds in (("source/train", design.source, design.source_seconds),
                                 ("source/dev", design.dev, design.dev_seconds)):
            portions += [Portion(part, "en", accent, accent, (person,), seconds) for person in people(accent, n)]
    for accent in design.targets:
        group = people(accent, design.target)
        portions += [Portion(f"targets/{accent}/train", "en", accent, accent, group, design.train_seconds),
                     Portion(f"targets/{accent}/test", "en", accent, accent, group, design.test_seconds)]
    return portions


def write_flac(path: Path, audio: np.ndarray) -> None:
    """16-bit FLAC, written atomically."""
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    write_atomic(path, buffer.getvalue())


def speak(job: Job) -> list[Spoken]:
    """Speaks the job's sentences in order, its speakers in turn, until it has `seconds` of speech (or none are
    left); writes OUT/audio/<utt>.flac."""
    portion, spoken, total = job.portion, [], 0.0
    for index, text in job.sentences:
        if total >= job.seconds:
            break
        speaker = portion.speakers[(job.turn + len(spoken)) % len(portion.speakers)]
        utt = f"{speaker.client_id}-{index:05d}"
        rng = np.random.default_rng([job.seed, zlib.crc32(portion.lang.encode()), index])
        audio = add_noise(synthesize(text, portion.voice, speaker), rng, float(rng.uniform(*SNR_DB)))
        write_flac(Path(job.out_dir) / "audio" / f"{utt}.flac", audio)
        spoken.append(Spoken(utt, speaker.client_id, text, audio.size / SAMPLE_RATE, index))
        total += audio.size / SAMPLE_RATE
    return spoken


def seconds_of(spoken: list[Spoken]) -> float:
    return sum(s.seconds for s in spoken)


def next_job(out_dir: Path, portion: Portion, spoken: list[Spoken], pool: list[str], free: list[int],
             seed: int) -> Job:
    """A job for what the portion still lacks, with the first free sentences of its pool (taken from `free`):
    about MARGIN times the words its speakers' mean rate (words per minute) says it needs."""
    lacking = portion.seconds - seconds_of(spoken)
    words = lacking / 60 * sum(s.rate for s in portion.speakers) / len(portion.speakers) * MARGIN
    taken, count = 0, 0
    while taken < len(free) and count < words:
        count += len(pool[free[taken]].split())
        taken += 1
    chosen = tuple((index, pool[index]) for index in free[:taken])
    del free[:taken]
    return Job(str(out_dir), portion, chosen, lacking, len(spoken), seed)


def speak_all(executor: Executor, out_dir: Path, portions: list[Portion], pools: dict[str, list[str]],
              seed: int) -> list[list[Spoken]]:
    """The utterances of every portion, spoken in rounds: each round hands every portion still short of its
    seconds the next free sentences of its pool; sentences a worker leaves unspoken go back to the pool. The
    result does not depend on the number of workers."""
    free = {lang: list(range(len(pool))) for lang, pool in pools.items()}
    said: list[list[Spoken]] = [[] for _ in portions]
    while pending := [i for i, p in enumerate(portions) if seconds_of(said[i]) < p.seconds]:
        jobs = [next_job(out_dir, portions[i], said[i], pools[portions[i].lang], free[portions[i].lang], seed)
                for i in pending]
        if not any(job.sentences for job in jobs):
            short = portions[pending[0]]
            raise DataPrepError(f"not enough {short.lang} sentences in the fortunes for {short.part} "
                                f"({len(pending)} portion(s) short of speech)")
        for i, job, spoken in zip(pending, jobs, executor.map(speak, jobs), strict=True):
            said[i] += spoken
            used = {s.index for s in spoken}
            free[job.portion.lang] += [index for index, _ in job.sentences if index not in used]
        for indices in free.values():
            indices.sort()
    return said


def shuffled_sentences(lang: str, seed: int) -> list[str]:
    """The language's fortune sentences in an order fixed by the seed."""
    pool = sentences(lang, languages=SENTENCE_SOURCES)
    random.Random(f"{seed}-{lang}-variation-sentences").shuffle(pool)
    return pool


def data_dirs(out_dir: Path, portions: list[Portion], said: list[list[Spoken]]) -> dict[str, tuple[DataDir, dict]]:
    """{part: (its data dir, {utterance: accent})}."""
    parts: dict[str, tuple[DataDir, dict]] = {}
    for portion, spoken in zip(portions, said, strict=True):
        data, accents = parts.setdefault(portion.part, (DataDir({}, {}, {}), {}))
        for s in spoken:
            data.wav_scp[s.utt] = str(out_dir / "audio" / f"{s.utt}.flac")
            data.text[s.utt], data.utt2spk[s.utt], data.utt2dur[s.utt] = s.text, s.speaker, s.seconds
            data.utt2lang[s.utt] = portion.lang
            if portion.accent:
                accents[s.utt] = portion.accent
    return parts


def write_parts(out_dir: Path, parts: dict[str, tuple[DataDir, dict]]) -> None:
    """Writes every data dir (validated), with utt2accent where utterances have accents."""
    for part, (data, accents) in parts.items():
        write_data_dir(data, out_dir / part)
        if accents:
            write_text_atomic(out_dir / part / "utt2accent", "".join(f"{u} {accents[u]}\n" for u in sorted(accents)))


def require_voices(voices) -> None:
    """DataPrepError naming the voices that espeak-ng lacks (it would speak with another one, silently)."""
    lines = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True).stdout.splitlines()[1:]
    missing = sorted(set(voices) - {line.split()[1] for line in lines if len(line.split()) > 1})
    if missing:
        raise DataPrepError(f"espeak-ng has no voice {', '.join(missing)} (see `espeak-ng --voices`); the variation "
                            "corpus needs espeak-ng 1.51 or later")


def espeak_version() -> str:
    result = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True)
    return result.stdout.split("Data at")[0].strip()


def describe(kind: str, seed: int, mini: bool, portions: list[Portion], said: list[list[Spoken]]) -> dict:
    """corpus.json: what the corpus is, every speaker (voice, variant, pitch, rate, accent, seconds per data dir)
    and every target."""
    speakers, targets = {}, {}
    for portion, spoken in zip(portions, said, strict=True):
        for person in portion.speakers:
            entry = speakers.setdefault(person.client_id, {
                "language": portion.lang, "accent": portion.accent, "espeak_voice": f"{portion.voice}+{person.variant}",
                "voice": portion.voice, "variant": person.variant, "pitch": person.pitch, "rate": person.rate,
                "seconds": {}})
            entry["seconds"][portion.part] = round(sum(s.seconds for s in spoken if s.speaker == person.client_id), 3)
        if portion.part.startswith("targets/"):
            name, split = portion.part.split("/")[1:]
            target = targets.setdefault(name, {"language": portion.lang, "accent": portion.accent,
                                               "speakers": [p.client_id for p in portion.speakers]})
            target[f"{split}_seconds"] = round(seconds_of(spoken), 3)
            target[f"{split}_utterances"] = len(spoken)
    sources = sorted({p.accent if kind == "accent" else p.speakers[0].client_id
                      for p in portions if p.part == "source/train"})
    return {
        "corpus": f"metarecipe variation corpus, task kind '{kind}'" + (" (mini)" if mini else ""),
        "synthetic": True,
        "note": "All speech is synthetic, spoken by espeak-ng: a speaker is an espeak-ng voice with a voice variant, "
                "pitch and rate; an accent is one of espeak-ng's regional English voices. Noise is mixed in at "
                f"a random SNR of {SNR_DB[0]:g}-{SNR_DB[1]:g} dB. Sentences come from the Debian fortunes and no "
                "sentence is spoken twice.",
        "task_kind": kind, "seed": seed, "mini": mini, "espeak_ng": espeak_version(),
        "audio": {"format": "flac", "sample_rate": SAMPLE_RATE, "channels": 1},
        "sentences": {lang: {"files": SENTENCE_SOURCES[lang][1], "debian_package": SENTENCE_SOURCES[lang][2]}
                      for lang in sorted({p.lang for p in portions})},
        "source_tasks": {"group_by": "accent" if kind == "accent" else "spk", "tasks": sources},
        "targets": targets, "speakers": dict(sorted(speakers.items())),
    }


def make_variation_corpus(out_dir, kind: str = "speaker", seed: int = 0, jobs: int = 2, mini: bool = False) -> dict:
    """Generates the corpus at out_dir; returns {data dir: (utterances, seconds)}."""
    if kind not in KINDS:
        raise DataPrepError(f"no task kind '{kind}'; choose from {', '.join(KINDS)}")
    design = DESIGNS[kind, mini]
    portions = (speaker_portions if kind == "speaker" else accent_portions)(design, seed)
    langs = sorted({p.lang for p in portions})
    require_tools(langs, SENTENCE_SOURCES, "the variation corpus")
    require_voices({p.voice for p in portions})
    out_dir = Path(out_dir).resolve()
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as executor:
        pools = dict(zip(langs, executor.map(shuffled_sentences, langs, [seed] * len(langs)), strict=True))
        said = speak_all(executor, out_dir, portions, pools, seed)
    parts = data_dirs(out_dir, portions, said)
    write_parts(out_dir, parts)
    targets = dict.fromkeys(p.part.split("/")[1] for p in portions if p.part.startswith("targets/"))
    write_text_atomic(out_dir / "targets" / "list", "".join(f"{name}\n" for name in targets))
    write_text_atomic(out_dir / "corpus.json", json.dumps(describe(kind, seed, mini, portions, said), indent=1,
                                                          ensure_ascii=False) + "\n")
    return {part: (len(data.utt2spk), sum(data.utt2dur.values())) for part, (data, _) in parts.items()}
