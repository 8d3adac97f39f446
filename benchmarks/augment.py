"""Seconds per meta-step with on-the-fly augmentation off, each augmentation alone, the defaults and all on.

A real meta-step of the trainer's pieces: draw_meta_batch (task sampling, support and query sets by seconds of
speech, features, augmentation) and the algorithm's meta-gradient and Adam step, with the model, inner loop and
batch sizes of recipes/cv_lowresource/conf/meta_train.yaml. The data is real speech: a data directory per
language from the Asterisk prompts in /usr/share/asterisk/sounds (8 kHz recordings, features at --sample-rate),
or, where they are not installed, from the espeak-ng demo corpus. Noise comes from /usr/share/asterisk/moh
(or --noise-dir). Every setting runs the same steps (the same seeds, so the same utterances) after a warm-up
that fills the audio cache, as it is after the first pass over the data: the table is the steady state.
Settings take turns step by step, so that other load on the machine slows them alike. `augment s` is the time
of the batch's features beyond plain loading, and its share of the whole step; `vs off` compares whole steps
(speed perturbation also changes the number of frames the model sees).

    python benchmarks/augment.py --minutes 3 --steps 4 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from metarecipe.config import load_config
from metarecipe.data import DataDir, write_data_dir
from metarecipe.data.corpora import get_corpus
from metarecipe.data.demo_corpus import make_demo_corpus
from metarecipe.features import FbankConfig, compute_feats
from metarecipe.features.augment import AugmentConfig
from metarecipe.io.pools import load_pools
from metarecipe.meta import make_algorithm
from metarecipe.meta.experiment import MetaTrainExperiment
from metarecipe.meta.sampling import TaskSampler, draw_meta_batch, make_augmenter
from metarecipe.models import BatchedCTCModel
from metarecipe.text.normalize import normalize
from metarecipe.text.tokens import TokenTable

ROOT = Path(__file__).resolve().parents[1]
RECIPE_CONFIG = ROOT / "recipes" / "cv_lowresource" / "conf" / "meta_train.yaml"
SOUNDS = Path("/usr/share/asterisk/sounds")
TEXTS = Path("/usr/share/doc")
MOH = Path("/usr/share/asterisk/moh")
ASTERISK_LANGS = ["en", "es", "fr", "it", "ru"]
DEMO_LANGS = ["de", "es", "it", "ru"]


def asterisk_prompts(lang: str) -> dict[str, str]:
    """{prompt key: normalised text} of an Asterisk language, from its core-sounds text file."""
    texts = {}
    with gzip.open(TEXTS / f"asterisk-core-sounds-{lang}" / f"core-sounds-{lang}.txt.gz", "rt",
                   encoding="utf-8", errors="replace") as f:
        for line in f:
            key, sep, text = line.partition(":")
            if sep and not line.startswith(";"):
                normalised = normalize(text.strip(), lang)
                if normalised:
                    texts[key.strip()] = normalised
    return texts


def asterisk_data_dir(lang: str, minutes: float, out: Path) -> Path:
    """A data directory of up to `minutes` of one Asterisk language's prompts (the speaker is the language)."""
    data = DataDir({}, {}, {}, utt2lang={})
    total = 0.0
    for key, text in sorted(asterisk_prompts(lang).items()):
        path = SOUNDS / lang / f"{key}.wav"
        if not path.is_file() or total >= minutes * 60:
            continue
        utt = f"{lang}-{key.replace('/', '_')}"
        data.wav_scp[utt], data.text[utt], data.utt2spk[utt], data.utt2lang[utt] = str(path), text, lang, lang
        total += soundfile.info(str(path)).duration
    return write_data_dir(data, out / lang)


def data_dirs(work: Path, corpus: str, minutes: float, sample_rate: int) -> list[Path]:
    """Data directories with features: Asterisk prompts (corpus "auto": where installed), or the demo corpus."""
    if corpus == "asterisk" or (corpus == "auto" and all((SOUNDS / lang).is_dir() for lang in ASTERISK_LANGS)):
        dirs = [asterisk_data_dir(lang, minutes, work / "data") for lang in ASTERISK_LANGS]
    else:
        make_demo_corpus(work / "demo", DEMO_LANGS, minutes)
        written = get_corpus("commonvoice")(work / "demo", work / "data", DEMO_LANGS, splits=("train",))
        dirs = [written[f"{lang}/train"] for lang in DEMO_LANGS]
    for directory in dirs:
        compute_feats(directory, nj=2, config=FbankConfig(sample_rate=sample_rate), progress=False)
    return dirs


def settings(noise_dir: str) -> dict[str, AugmentConfig]:
    """Each augmentation alone (noise, babble and reverberation on every utterance), the defaults, all on."""
    alone = AugmentConfig(speed_factors=[1.0], spec_augment=None)
    return {
        "off": AugmentConfig(enabled=False),
        "speed 0.9/1.0/1.1": dataclasses.replace(alone, speed_factors=[0.9, 1.0, 1.1]),
        "noise (p=1)": dataclasses.replace(alone, noise_dirs=[noise_dir], noise_prob=1.0),
        "babble (p=1)": dataclasses.replace(alone, babble_prob=1.0),
        "reverb (p=1)": dataclasses.replace(alone, reverb_prob=1.0),
        "specaugment": AugmentConfig(speed_factors=[1.0]),
        "defaults + noise dir": AugmentConfig(noise_dirs=[noise_dir]),
        "all on (p=1)": AugmentConfig(noise_dirs=[noise_dir], noise_prob=1.0, babble_prob=1.0, reverb_prob=1.0),
    }


class Setting:
    """One augmentation setting with its own augmenter, model and optimiser, timed step by step."""

    def __init__(self, name: str, augment_config: AugmentConfig, experiment: MetaTrainExperiment, pools,
                 algorithm: str):
        self.name, self.pools, self.train = name, pools, experiment.train
        self.augment = make_augmenter(augment_config, (u for pool in pools.values() for u in pool))
        if self.augment is not None:  # the steady state: every utterance's audio decoded once already
            for utt in (u for pool in pools.values() for u in pool):
                self.augment.audio.samples(utt.source, utt.source.fbank.sample_rate)
        torch.manual_seed(self.train.seed)
        self.algo = make_algorithm(algorithm, BatchedCTCModel(experiment.model), experiment.inner)
        self.optimizer = torch.optim.Adam(self.algo.meta_parameters(), lr=self.train.meta_lr)
        self.sampler = TaskSampler(pools, self.train.strategy)
        self.draws, self.computes = [], []

    def step(self, step: int) -> None:
        """A meta-step as the trainer takes it: the (seed, step) batch, its meta-gradient, the Adam step."""
        rng = np.random.default_rng([self.train.seed, step])
        start = time.perf_counter()
        batch = draw_meta_batch(self.pools, self.sampler.sample(self.train.tasks_per_batch, rng),
                                self.train.support_seconds, self.train.query_seconds, rng, self.augment)
        drawn = time.perf_counter()
        _, grads = self.algo.meta_gradient(batch)
        self.optimizer.zero_grad()
        for p, g in zip(self.algo.meta_parameters(), grads, strict=True):
            p.grad = None if g is None else g.detach()
        self.optimizer.step()
        self.draws.append(drawn - start)
        self.computes.append(time.perf_counter() - drawn)

    def record(self) -> dict:
        """Medians over the timed steps (the first, a warm-up, left out)."""
        draws, computes = self.draws[1:], self.computes[1:]
        return {"setting": self.name, "draw_seconds": statistics.median(draws),
                "compute_seconds": statistics.median(computes),
                "step_seconds": statistics.median(d + c for d, c in zip(draws, computes, strict=True)),
                "steps": len(draws)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=["auto", "asterisk", "demo"], default="auto",
                        help="real speech from Asterisk's prompts (auto: where installed), or the espeak-ng demo")
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of speech per language")
    parser.add_argument("--sample-rate", type=int, default=16000, help="of the features")
    parser.add_argument("--algorithm", default="fomaml", help="fomaml (the cheapest step: the largest share), maml")
    parser.add_argument("--steps", type=int, default=4, help="timed meta-steps per setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--noise-dir", default=str(MOH), help="noise recordings (default: Asterisk's music on hold)")
    parser.add_argument("--only", nargs="+", help="settings to run, in this order (default: all)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = data_dirs(Path(tmp), args.corpus, args.minutes, args.sample_rate)
        noise_dir = args.noise_dir
        if not Path(noise_dir).is_dir():  # no recordings of noise here: half a minute of brown noise
            noise_dir = str(Path(tmp) / "noise")
            Path(noise_dir).mkdir()
            white = np.random.default_rng(0).standard_normal(args.sample_rate * 30)
            soundfile.write(Path(noise_dir) / "noise.wav", 0.1 * np.cumsum(white) / np.sqrt(len(white)),
                            args.sample_rate)
        experiment = load_config(MetaTrainExperiment, RECIPE_CONFIG, [f"data.train={[str(d) for d in dirs]}"])
        texts = [t for d in dirs for t in (d / "text").read_text(encoding="utf-8").splitlines()]
        tokens = TokenTable.from_texts(line.partition(" ")[2] for line in texts)
        experiment = dataclasses.replace(experiment, model=dataclasses.replace(experiment.model,
                                                                               vocab_size=len(tokens)))
        pools = load_pools(dirs, tokens, "lang")
        speech = {lang: sum(u.seconds for u in pool) / 60 for lang, pool in pools.items()}
        configs = settings(noise_dir)
        runs = [Setting(name, configs[name], experiment, pools, args.algorithm) for name in args.only or configs]
        for step in range(args.steps + 1):  # settings take turns: a busy machine slows them alike
            for run in runs:
                run.step(step)
        records = [run.record() for run in runs]
    off = next((r for r in records if r["setting"] == "off"), None)
    for r in records:
        if off:
            r["augment_seconds"] = r["draw_seconds"] - off["draw_seconds"]
            r["augment_share"] = r["augment_seconds"] / r["step_seconds"]
            r["overhead"] = r["step_seconds"] / off["step_seconds"] - 1
    print(f"data: {', '.join(f'{k} {v:.1f} min' for k, v in speech.items())}; {args.algorithm}, model of "
          f"{RECIPE_CONFIG.name}, {experiment.train.tasks_per_batch} tasks x ({experiment.train.support_seconds:g} + "
          f"{experiment.train.query_seconds:g}) s, features at {args.sample_rate} Hz, {args.threads} threads")
    print(f"{'setting':<22} {'step s':>7} {'draw s':>7} {'model s':>8} {'augment s':>10} {'share':>6} {'vs off':>7}")
    for r in records:
        extra = (f"{r['augment_seconds']:>10.3f} {100 * r['augment_share']:>5.1f}% {100 * r['overhead']:>+6.1f}%"
                 if off else "")
        print(f"{r['setting']:<22} {r['step_seconds']:>7.3f} {r['draw_seconds']:>7.3f} {r['compute_seconds']:>8.3f} "
              f"{extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"minutes_per_task": speech, "sample_rate": args.sample_rate, "algorithm": args.algorithm,
                       "threads": args.threads, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
