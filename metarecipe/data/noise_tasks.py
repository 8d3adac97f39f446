"""Noise-condition tasks as Kaldi data directories: real speech mixed with real recorded and generated noise.

A condition is a noise type and an SNR band (`music_5-10`: music at an SNR drawn uniformly in [5, 10] dB per
utterance, speech power measured over the whole utterance). Meta-training tasks are the source types x bands;
the targets, adapted to and tested on, are other (unseen) types x bands. Noise types (noise_signals):

- real recordings: `music` (Debian's asterisk-moh-opsound-wav music on hold, /usr/share/asterisk/moh, 5 tracks,
  18 min) and `monkeys` (asterisk-core-sounds' tt-monkeys.wav, 16 s of screaming monkeys: only 16 s, looped,
  so it is offered but in no default set); a segment from a random place, looped where the recording is shorter;
- generated: `white`, `pink`, `brown`, `hum` (50 Hz mains and harmonics) and `babble` (4-8 talkers made of
  other utterances of the same split, never of the utterance's own text).

Layout of OUT:

    audio/<condition>/<utt>.flac      16-bit FLAC at the output rate
    source/{train,dev}/               every source-train (dev) utterance in one source task: round-robin over
                                      the tasks after a seeded shuffle; when that leaves a task under
                                      MIN_TASK_SECONDS (dev: MIN_DEV_TASK_SECONDS) of speech (or none), every
                                      utterance in every task
    targets/<target>/train/           a seeded subset (target_train_minutes) of the dev speech: the
                                      adaptation data, speech meta-training never trained on (dev speech only
                                      measures its held-out loss)
    targets/<target>/test/            every --speech-test utterance
    targets/list                      one target a line
    corpus.json                       every condition: type, band, real or generated, noise files, minutes

Each data directory has wav.scp, text, utt2spk, spk2utt, utt2dur, utt2lang (when the speech has it), utt2noise
(the condition: meta-training groups tasks by it) and mixing.tsv (utt, SNR, the gain applied to keep the peak
under 1 to both speech and noise, what the noise is made of). Utterance ids are `<condition>-<utt>`, speakers
`<condition>-<speaker>`. Every file is written to a temporary name and renamed; corpus.json is removed first and
written last, so a directory with corpus.json is complete. The same seed gives the same files: each mix draws
from a generator seeded by (seed, condition, utterance). `mini` (CI): 2 source types x 1 band, 1 target, and
MINI_SECONDS of speech drawn from each pool.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from metarecipe.data.audio import AudioError, read_audio
from metarecipe.data.datadir import DataDir, combine_data_dirs, read_data_dir, write_data_dir
from metarecipe.data.noise_signals import COLOUR_EXPONENTS, Recordings, Speech, mix, noise_of
from metarecipe.errors import InputError
from metarecipe.io.atomic import write_atomic, write_text_atomic

REAL_NOISE = {"music": "/usr/share/asterisk/moh", "monkeys": "/usr/share/asterisk/sounds/en/tt-monkeys.wav"}
GENERATED = ("white", "pink", "brown", "hum", "babble")
SOURCE_TYPES = ("music", "white", "pink", "hum")
TARGET_TYPES = ("babble", "brown")
SNR_BANDS = ("0-5", "5-10", "10-20")
MIN_TASK_SECONDS = 90.0
MIN_DEV_TASK_SECONDS = 30.0  # meta-training's held-out support and query sets (10 s each) with room to draw them
MIN_ADAPT_MINUTES = 2.6  # adaptation budgets up to 2 min and a held-out slice
MINI_SECONDS = {"train": 45.0, "dev": 45.0, "test": 8.0}  # speech of each pool in --mini (dev: the targets'
# adaptation data, budgets to 0.5 min)
_BAND = re.compile(r"(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)")


def band_limits(band: str) -> tuple[float, float]:
    """(low, high) dB of a band written `low-high` (`0-5`); InputError otherwise."""
    match = _BAND.fullmatch(band)
    if not match or float(match[1]) >= float(match[2]):
        raise InputError(f"SNR band '{band}': write it low-high in dB with low < high, e.g. 0-5")
    return float(match[1]), float(match[2])


@dataclass(frozen=True)
class Condition:
    """A noise type in an SNR band: a meta-training task or a target."""

    kind: str
    band: str

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.band}"


@dataclass
class NoiseTaskConfig:
    """What make_noise_tasks builds (the options of `metarecipe make-noise-tasks`); InputError when unusable."""

    speech_train: list[str]
    speech_dev: list[str]
    speech_test: list[str]
    seed: int = 0
    source_types: list[str] = field(default_factory=lambda: list(SOURCE_TYPES))
    target_types: list[str] = field(default_factory=lambda: list(TARGET_TYPES))
    snr_bands: list[str] = field(default_factory=lambda: list(SNR_BANDS))
    target_snr_bands: list[str] | None = None  # None: snr_bands
    target_train_minutes: float = 4.0
    sample_rate: int = 8000
    real_noise: dict[str, str] = field(default_factory=lambda: dict(REAL_NOISE))
    mini: bool = False

    def __post_init__(self):
        if clash := sorted(set(self.real_noise) & set(GENERATED)):
            raise InputError(f"real noise type(s) {', '.join(clash)} would hide the generated one(s) of that name")
        known = sorted(set(self.real_noise) | set(GENERATED))
        if unknown := [t for t in self.source_types + self.target_types if t not in known]:
            raise InputError(f"unknown noise type(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if seen := sorted(set(self.source_types) & set(self.target_types)):
            raise InputError(f"noise type(s) {', '.join(seen)} both source and target: targets must be unseen")
        lists = (self.source_types, self.target_types, self.snr_bands, self.target_snr_bands or [])
        if any(len(set(values)) != len(values) for values in lists):
            raise InputError("a noise type or SNR band is listed twice")
        if not self.source_types or not self.target_types:
            raise InputError("give at least one source and one target noise type")
        for band in self.snr_bands + (self.target_snr_bands or []):
            band_limits(band)
        if self.sample_rate <= 0 or self.target_train_minutes <= 0:
            raise InputError("sample rate and target train minutes must be positive")

    def sources(self) -> list[Condition]:
        types, bands = (self.source_types[:2], self.snr_bands[:1]) if self.mini else (self.source_types,
                                                                                       self.snr_bands)
        return [Condition(kind, band) for kind in types for band in bands]

    def targets(self) -> list[Condition]:
        bands = self.target_snr_bands or self.snr_bands
        types, bands = (self.target_types[:1], bands[:1]) if self.mini else (self.target_types, bands)
        return [Condition(kind, band) for kind in types for band in bands]


@dataclass(frozen=True)
class Mixed:
    """One written mix."""

    condition: Condition
    speech: Speech
    path: Path
    snr_db: float
    gain: float
    noise: str  # what the noise is made of

    @property
    def utt(self) -> str:
        return f"{self.condition.name}-{self.speech.utt}"


def seed_of(*parts) -> int:
    """A 64-bit seed from any values (their text), the same in every process."""
    return int.from_bytes(hashlib.sha256("\t".join(map(str, parts)).encode()).digest()[:8], "big")


def read_pool(dirs: list[str], rate: int, skipped: list[dict], seconds: float | None = None, seed: int = 0) -> list:
    """The utterances of data directories as Speech at `rate` (with `seconds`, utterances drawn by the seed
    until that much speech). One whose audio cannot be read is reported on stderr, added to `skipped` and left
    out."""
    data = combine_data_dirs([read_data_dir(d, features=False) for d in dirs])
    utterances = data.utterances
    if seconds is not None:
        order = np.random.default_rng(seed_of(seed, "mini", *dirs)).permutation(len(utterances))
        utterances = [utterances[i] for i in order]
    pool, total = [], 0.0
    for utt in utterances:
        if seconds is not None and total >= seconds:
            break
        spec, segment = data.wav_scp[data.recording_of(utt)], data.segments.get(utt)
        try:
            samples = read_audio(spec, rate, segment.start if segment else 0.0, segment.end if segment else -1.0)
        except AudioError as err:
            print(f"metarecipe make-noise-tasks: warning: skipped utterance {utt} ({spec}): {err}", file=sys.stderr)
            skipped.append({"utt": utt, "audio": spec, "reason": str(err)})
            continue
        pool.append(Speech(utt, data.utt2spk[utt], data.text[utt], data.utt2lang.get(utt), samples))
        total += samples.size / rate
    if not pool:
        raise InputError(f"no readable utterance in {', '.join(dirs)}")
    return sorted(pool, key=lambda s: s.utt)


def assign(pool: list[Speech], conditions: list[Condition], rate: int, seed: int, split: str,
           min_seconds: float) -> tuple[list[tuple[Condition, Speech]], bool]:
    """(condition, utterance) pairs: the pool shuffled by the seed and dealt round-robin, or, when that would
    leave a condition under min_seconds or empty, every utterance in every condition (the bool says which)."""
    seconds = sum(s.samples.size for s in pool) / rate
    if len(pool) < len(conditions) or seconds / len(conditions) < min_seconds:
        return [(c, s) for c in conditions for s in pool], True
    order = np.random.default_rng(seed_of(seed, "assign", split)).permutation(len(pool))
    return [(conditions[i % len(conditions)], pool[j]) for i, j in enumerate(order)], False


def adaptation_subset(pool: list[Speech], minutes: float, rate: int, seed: int, target: str) -> list[Speech]:
    """Utterances of the pool in a seeded order until `minutes` of speech (all of it if it holds less)."""
    chosen, seconds = [], 0.0
    for j in np.random.default_rng(seed_of(seed, "adapt", target)).permutation(len(pool)):
        if seconds >= minutes * 60:
            break
        chosen.append(pool[j])
        seconds += pool[j].samples.size / rate
    return chosen


def write_flac(path: Path, samples: np.ndarray, rate: int) -> None:
    """16-bit FLAC, encoded in memory, written to a temporary name and renamed."""
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, subtype="PCM_16", format="FLAC")
    write_atomic(path, buffer.getvalue())


def mix_one(out: Path, condition: Condition, speech: Speech, config: NoiseTaskConfig, recordings: dict,
            pool: list[Speech]) -> Mixed:
    """Speech mixed with the condition's noise, written to out/audio/<condition>/<utt>.flac."""
    rng = np.random.default_rng(seed_of(config.seed, condition.name, speech.utt))
    snr_db = float(rng.uniform(*band_limits(condition.band)))
    noise, source = noise_of(condition.kind, speech, config.sample_rate, rng, recordings, pool)
    mixed, gain = mix(speech.samples, noise, snr_db)
    path = out / "audio" / condition.name / f"{speech.utt}.flac"
    write_flac(path, mixed, config.sample_rate)
    return Mixed(condition, speech, path, snr_db, gain, source)


def write_split(directory: Path, mixes: list[Mixed], rate: int) -> None:
    """A data directory of mixes, with utt2noise and mixing.tsv."""
    data = DataDir({}, {}, {})
    for m in mixes:
        data.wav_scp[m.utt], data.text[m.utt] = str(m.path), m.speech.text
        data.utt2spk[m.utt] = f"{m.condition.name}-{m.speech.spk}"
        data.utt2dur[m.utt] = m.speech.samples.size / rate
        if m.speech.lang is not None:
            data.utt2lang[m.utt] = m.speech.lang
    if len(data.utt2lang) != len(data.utt2spk):
        data.utt2lang = {}
    write_data_dir(data, directory)
    ordered = sorted(mixes, key=lambda m: m.utt.encode())
    write_text_atomic(directory / "utt2noise", "".join(f"{m.utt} {m.condition.name}\n" for m in ordered))
    write_text_atomic(directory / "mixing.tsv", "utt\tsnr_db\tgain\tnoise\n" + "".join(
        f"{m.utt}\t{m.snr_db:.4f}\t{m.gain:.6f}\t{m.noise}\n" for m in ordered))


def summary(mixes: list[Mixed], rate: int) -> dict:
    """Utterances and minutes of speech of some mixes."""
    return {"utterances": len(mixes), "minutes": round(sum(m.speech.samples.size for m in mixes) / rate / 60, 2)}


def describe(condition: Condition, splits: dict[str, list[Mixed]], config: NoiseTaskConfig) -> dict:
    """corpus.json's entry of a condition."""
    real = condition.kind in config.real_noise
    files = sorted({m.noise.rsplit("@", 1)[0] for ms in splits.values() for m in ms}) if real else []
    made = {"babble": "babble of 4-8 talkers from other utterances of the same split",
            "hum": "50 Hz mains hum with harmonics and a little broadband noise"}
    what = f"real recordings: {config.real_noise[condition.kind]}" if real else made.get(
        condition.kind, f"generated Gaussian noise, PSD ~ 1/f^{COLOUR_EXPONENTS.get(condition.kind, 0):g}")
    return {"type": condition.kind, "snr_db": list(band_limits(condition.band)), "real": real, "noise": what,
            "noise_files": files, **{split: summary(ms, config.sample_rate) for split, ms in splits.items()}}


def load_recordings(config: NoiseTaskConfig) -> dict[str, Recordings]:
    """The real recordings of every real type in use."""
    used = {c.kind for c in config.sources() + config.targets()}
    return {kind: Recordings(path, config.sample_rate) for kind, path in config.real_noise.items()
            if kind in used}


def make_noise_tasks(out_dir, config: NoiseTaskConfig) -> dict:
    """Writes the noise-condition corpus at out_dir (layout in the module docstring); returns corpus.json."""
    out, rate = Path(out_dir).resolve(), config.sample_rate
    (out / "corpus.json").unlink(missing_ok=True)
    skipped: list[dict] = []
    pools = {split: read_pool(dirs, rate, skipped, MINI_SECONDS[split] if config.mini else None, config.seed)
             for split, dirs in (("train", config.speech_train), ("dev", config.speech_dev),
                                 ("test", config.speech_test))}
    recordings = load_recordings(config)
    sources, targets = config.sources(), config.targets()
    corpus = {"sample_rate": rate, "seed": config.seed, "mini": config.mini, "assignment": {},
              "speech": {"train": config.speech_train, "dev": config.speech_dev, "test": config.speech_test},
              "tasks": {}, "targets": {}, "skipped": skipped}
    by_task: dict[str, dict[str, list[Mixed]]] = {c.name: {"train": [], "dev": []} for c in sources}
    for split, min_seconds in (("train", MIN_TASK_SECONDS), ("dev", MIN_DEV_TASK_SECONDS)):
        pairs, every = assign(pools[split], sources, rate, config.seed, split, min_seconds)
        corpus["assignment"][split] = "every utterance in every task" if every else "round-robin"
        mixes = [mix_one(out, c, s, config, recordings, pools[split]) for c, s in pairs]
        write_split(out / "source" / split, mixes, rate)
        for m in mixes:
            by_task[m.condition.name][split].append(m)
    corpus["tasks"] = {c.name: describe(c, by_task[c.name], config) for c in sources}
    for target in targets:
        adapt = adaptation_subset(pools["dev"], config.target_train_minutes, rate, config.seed, target.name)
        if not config.mini and sum(s.samples.size for s in adapt) / rate < MIN_ADAPT_MINUTES * 60:
            print(f"metarecipe make-noise-tasks: warning: {target.name}/train has under {MIN_ADAPT_MINUTES} min "
                  "of speech: the 2 min adaptation budget and a held-out slice do not fit", file=sys.stderr)
        splits = {"train": [mix_one(out, target, s, config, recordings, pools["dev"]) for s in adapt],
                  "test": [mix_one(out, target, s, config, recordings, pools["test"]) for s in pools["test"]]}
        for split, mixes in splits.items():
            write_split(out / "targets" / target.name / split, mixes, rate)
        corpus["targets"][target.name] = describe(target, splits, config)
    write_text_atomic(out / "targets" / "list", "".join(f"{t.name}\n" for t in targets))
    write_text_atomic(out / "corpus.json", json.dumps(corpus, indent=1, ensure_ascii=False) + "\n")
    return corpus
