"""Feature extraction speed: `compute_feats` on demo-corpus data directories, as multiples of real time.

Generates the demo corpus (or uses --corpus-dir, a Common Voice-layout release), prepares the train sets of
the chosen languages, and extracts 80-dim fbank with 1 and 2 jobs, each from scratch, beside the time to only
decode the audio. Prints a table; --json writes the records.

    python benchmarks/compute_feats.py --langs de es --minutes 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from metarecipe.data import read_data_dir
from metarecipe.data.audio import read_audio
from metarecipe.data.corpora import get_corpus
from metarecipe.data.demo_corpus import make_demo_corpus
from metarecipe.features import compute_feats


def measure(data_dir: Path, jobs: list[int]) -> list[dict]:
    data = read_data_dir(data_dir)
    audio_seconds = sum(data.utt2dur.values())
    start = time.perf_counter()
    for utt in data.utterances:
        read_audio(data.wav_scp[utt])
    records = [{"data_dir": str(data_dir), "what": "decode audio only", "nj": 1,
                "seconds": time.perf_counter() - start, "audio_seconds": audio_seconds}]
    for nj in jobs:
        shutil.rmtree(data_dir / "fbank", ignore_errors=True)
        start = time.perf_counter()
        compute_feats(data_dir, nj=nj, progress=False)
        records.append({"data_dir": str(data_dir), "what": "compute_feats", "nj": nj,
                        "seconds": time.perf_counter() - start, "audio_seconds": audio_seconds})
    for r in records:
        r["x_real_time"] = r["audio_seconds"] / r["seconds"]
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-dir", help="a Common Voice-layout release (default: generate the demo corpus)")
    parser.add_argument("--langs", nargs="+", default=["de", "es"])
    parser.add_argument("--minutes", type=float, default=10.0, help="demo minutes per language")
    parser.add_argument("--nj", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus_dir or Path(tmp) / "demo")
        if args.corpus_dir is None:
            make_demo_corpus(corpus, args.langs, args.minutes)
        written = get_corpus("commonvoice")(corpus, Path(tmp) / "data", args.langs, splits=("train",))
        records = [r for lang in args.langs for r in measure(written[f"{lang}/train"], args.nj)]
    print(f"{'train set':<10} {'audio min':>9}  {'what':<18} {'nj':>3} {'seconds':>8} {'x real time':>12}")
    for r in records:
        name = Path(r["data_dir"]).parent.name
        print(f"{name:<10} {r['audio_seconds'] / 60:>9.1f}  {r['what']:<18} {r['nj']:>3} {r['seconds']:>8.2f} "
              f"{r['x_real_time']:>12.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
