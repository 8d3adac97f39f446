"""Compressed models side by side: size, parameters and decoding time on 1 CPU thread, fp32 as the peer.

    python benchmarks/compress.py recipes/cv_lowresource/exp/adapt/metasgd_eo_1m --data data/eo/test \
        --lm data/lm/eo/char6/lm.arpa --lm-unit token --beam 16 --lm-weight 0.8 [--json]

Reads ADAPT_DIR/compress/<variant>/model.pt (recipe stage 8, or `metarecipe compress`). Each round decodes the
whole set once with every variant, in turn (acoustic model, then the beam search with the LM); the table gives
each variant's median over the rounds and its ratios to fp32 measured in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from metarecipe.decode.decoder import decode, log_probs_of
from metarecipe.decode.lm_tables import lm_tables
from metarecipe.io.pools import load_pools
from metarecipe.kernels.beam_search import BeamSearchOptions
from metarecipe.kernels.compact import load_compact
from metarecipe.text.lm import NGramLM
from metarecipe.text.tokens import TokenTable

VARIANTS = ("fp32", "pruned", "int8", "pruned_int8")


def timed_decode(model, utts, tokens, options, tables) -> tuple[float, float]:
    start = time.perf_counter()
    log_probs = log_probs_of(model, utts)
    acoustic = time.perf_counter() - start
    start = time.perf_counter()
    decode(log_probs, tokens, options, tables)
    return acoustic, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adapt_dir")
    p.add_argument("--data", required=True, help="data dir with features (the test set)")
    p.add_argument("--lm", help="ARPA LM")
    p.add_argument("--lm-unit", choices=("word", "token"), default="token")
    p.add_argument("--beam", type=int, default=16)
    p.add_argument("--lm-weight", type=float, default=0.8)
    p.add_argument("--token-threshold", type=float, default=BeamSearchOptions.token_threshold)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = p.parse_args()
    torch.set_num_threads(1)
    paths = {v: Path(args.adapt_dir) / "compress" / v / "model.pt" for v in VARIANTS}
    models = {v: load_compact(path) for v, path in paths.items() if path.exists()}
    if "fp32" not in models:
        raise SystemExit(f"{paths['fp32']}: missing (the peer); run recipe stage 8 or metarecipe compress")
    tokens = TokenTable(models["fp32"].tokens)
    utts = [u for pool in load_pools([args.data], tokens).values() for u in pool]
    tables = lm_tables(NGramLM.read_arpa(args.lm), tokens, args.lm_unit) if args.lm else None
    options = BeamSearchOptions(beam=args.beam, lm_weight=args.lm_weight, token_threshold=args.token_threshold)
    audio = sum(u.seconds for u in utts)
    for model in models.values():  # warm-up: first-call allocations and kernel setup
        timed_decode(model, utts[:8], tokens, options, tables)
    times = {v: [] for v in models}
    for _ in range(args.rounds):
        for variant, model in models.items():
            times[variant].append(timed_decode(model, utts, tokens, options, tables))
    rows = []
    for variant, model in models.items():
        total = [a + s for a, s in times[variant]]
        peer = [a + s for a, s in times["fp32"]]
        rows.append({"variant": variant, "nonzero_params": model.parameter_count(),
                     "bytes": paths[variant].stat().st_size,
                     "acoustic_s": statistics.median(a for a, _ in times[variant]),
                     "search_s": statistics.median(s for _, s in times[variant]),
                     "rtf": statistics.median(total) / audio,
                     "speedup": statistics.median(p / t for p, t in zip(peer, total, strict=True)),
                     "smaller": paths["fp32"].stat().st_size / paths[variant].stat().st_size})
    if args.json:
        print(json.dumps({"adapt_dir": args.adapt_dir, "utterances": len(utts), "audio_seconds": audio,
                          "threads": 1, "rounds": args.rounds, "rows": rows}, indent=1))
        return
    print(f"{args.adapt_dir}: {len(utts)} utterances, {audio:.0f} s of audio, 1 thread, median of {args.rounds} "
          "rounds")
    print(f"{'variant':<12} {'nonzero':>9} {'KiB':>7} {'smaller':>8} {'acoustic s':>11} {'search s':>9} "
          f"{'RTF':>8} {'faster':>7}")
    for r in rows:
        print(f"{r['variant']:<12} {r['nonzero_params']:>9,} {r['bytes'] / 1024:>7.0f} {r['smaller']:>7.2f}x "
              f"{r['acoustic_s']:>11.3f} {r['search_s']:>9.3f} {r['rtf']:>8.5f} {r['speedup']:>6.2f}x")


if __name__ == "__main__":
    main()
