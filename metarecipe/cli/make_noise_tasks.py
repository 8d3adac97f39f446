"""`metarecipe make-noise-tasks OUT`: noise-condition tasks (noise type x SNR band) as Kaldi data directories."""

from __future__ import annotations

import argparse
import time

from metarecipe.data.noise_tasks import (
    REAL_NOISE,
    SNR_BANDS,
    SOURCE_TYPES,
    TARGET_TYPES,
    NoiseTaskConfig,
    make_noise_tasks,
)
from metarecipe.errors import InputError


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="mix speech with real and generated noise into noise-condition tasks",
                       description="Mixes the speech of data directories with noise (real recordings: music on "
                                   "hold; generated: white, pink, brown, hum, babble) at SNRs drawn in bands. "
                                   "Writes OUT/source/{train,dev} (meta-training tasks, utt2noise), "
                                   "OUT/targets/<target>/{train,test} (unseen noise types), OUT/targets/list, "
                                   "OUT/corpus.json and the audio under OUT/audio. Deterministic for a seed.")
    p.add_argument("out_dir")
    p.add_argument("--speech-train", nargs="+", required=True, metavar="DIR", help="data dirs: meta-training "
                   "speech, also the adaptation speech of the targets")
    p.add_argument("--speech-dev", nargs="+", required=True, metavar="DIR")
    p.add_argument("--speech-test", nargs="+", required=True, metavar="DIR", help="data dirs: the targets' test")
    p.add_argument("--noise-dir", default=REAL_NOISE["music"], help="recordings of the `music` type (default "
                   "%(default)s)")
    p.add_argument("--real-noise", nargs="+", default=[], metavar="TYPE=PATH",
                   help="more real noise types, each a directory of recordings or one file (default also "
                        f"monkeys={REAL_NOISE['monkeys']})")
    p.add_argument("--source-types", nargs="+", default=list(SOURCE_TYPES))
    p.add_argument("--target-types", nargs="+", default=list(TARGET_TYPES))
    p.add_argument("--snr-bands", nargs="+", default=list(SNR_BANDS), metavar="LOW-HIGH")
    p.add_argument("--target-snr-bands", nargs="+", default=None, metavar="LOW-HIGH",
                   help="bands of the targets (default: --snr-bands; 0-20 gives one target per type)")
    p.add_argument("--target-train-minutes", type=float, default=4.0,
                   help="speech in each target's train (adaptation) directory (default 4)")
    p.add_argument("--sample-rate", type=int, default=8000, help="of the written audio (default 8000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mini", action="store_true", help="a tiny corpus for CI: 2 source types x 1 band, 1 target, "
                                                       "a few utterances")


def real_noise(args: argparse.Namespace) -> dict[str, str]:
    """The real noise types and their recordings, from --noise-dir and --real-noise."""
    found = {**REAL_NOISE, "music": args.noise_dir}
    for item in args.real_noise:
        kind, equals, path = item.partition("=")
        if not equals or not kind or not path:
            raise InputError(f"--real-noise {item}: write TYPE=PATH")
        found[kind] = path
    return found


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    config = NoiseTaskConfig(args.speech_train, args.speech_dev, args.speech_test, args.seed, args.source_types,
                             args.target_types, args.snr_bands, args.target_snr_bands, args.target_train_minutes,
                             args.sample_rate, real_noise(args), args.mini)
    corpus = make_noise_tasks(args.out_dir, config)
    for kind in ("tasks", "targets"):
        for name, entry in corpus[kind].items():
            splits = ", ".join(f"{split} {entry[split]['utterances']} utts {entry[split]['minutes']:.2f} min"
                               for split in ("train", "dev", "test") if split in entry)
            print(f"{kind[:-1]} {name}: {splits}")
    print(f"{args.out_dir}: {len(corpus['tasks'])} tasks ({corpus['assignment']['train']}), "
          f"{len(corpus['targets'])} targets, {len(corpus['skipped'])} utterance(s) skipped, in "
          f"{time.perf_counter() - start:.0f} s")
    return 0
