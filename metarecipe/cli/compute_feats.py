"""`metarecipe compute-feats DATA_DIR`: fbank features into Kaldi ark/scp, split over --nj processes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from metarecipe.config import ConfigError
from metarecipe.data.datadir import SKIPPED_FEATURES
from metarecipe.features import FbankConfig, compute_feats


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="fbank features of a data directory",
                       description="Computes Kaldi-compatible log-mel filterbanks of every utterance into Kaldi "
                                   "ark/scp files, split over --nj processes, and writes feats.scp, "
                                   "utt2num_frames and per-speaker cmvn.scp into the data directory. Finished "
                                   "jobs whose outputs are intact are skipped on a re-run. Utterances whose audio "
                                   f"cannot be read are left out of those tables and listed in DATA_DIR/"
                                   f"{SKIPPED_FEATURES} with the reason (the source tables are never changed); a "
                                   "re-run tries them again.")
    p.add_argument("data_dir")
    p.add_argument("--feat-dir", help="where the ark files go (default: DATA_DIR/fbank)")
    p.add_argument("--nj", type=int, default=2, help="parallel jobs (default 2)")
    p.add_argument("--num-mel-bins", type=int, default=80)
    p.add_argument("--sample-rate", type=int, default=16000)


def run(args: argparse.Namespace) -> int:
    if args.nj < 1:
        raise ConfigError(f"--nj must be at least 1, got {args.nj}")
    config = FbankConfig(num_mel_bins=args.num_mel_bins, sample_rate=args.sample_rate)
    start = time.perf_counter()
    summary = compute_feats(args.data_dir, args.feat_dir, args.nj, config)
    seconds = time.perf_counter() - start
    audio = summary["frames"] * 0.01
    skipped = f" (listed in {Path(args.data_dir) / SKIPPED_FEATURES})" if summary["skipped"] else ""
    print(f"{args.data_dir}: {summary['utterances']} utterances, {audio / 3600:.2f} h of audio, "
          f"{summary['skipped']} skipped{skipped}, {summary['jobs_run']} of {args.nj} jobs run in {seconds:.1f} s "
          f"({audio / max(seconds, 1e-9):.0f}x real time)")
    return 0
