"""The ONNX exports of a model against the torch model on a data set: greedy CER, agreement, acoustic-model time.

    python benchmarks/onnx_export.py --model recipes/cv_lowresource/exp/adapt/metasgd_eo_1m/model.pt \
        --data data/eo/test [--onnx-dir exp/onnx] [--threads 1] [--rounds 3] [--json]

Exports MODEL in memory as `metarecipe export --onnx` does (float32, and int8 weights), or with --onnx-dir reads
the files that command wrote, then greedy-decodes every utterance of DATA_DIR (features from compute-feats, CMVN
applied as in decoding) with the torch model, the float32 and the int8 ONNX model in onnxruntime, in the same
length-sorted batches. For each: CER against DATA_DIR/text, the share of utterances whose hypothesis is the torch
model's, the largest |difference| of its log-probabilities from torch's over valid frames, and the acoustic-model
time (features already loaded; median over the rounds) with its ratio to torch's in the same rounds, all on
--threads threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from metarecipe.compress.export import model_from_compact
from metarecipe.compress.onnx_export import (
    check_exportable,
    export_float32,
    onnx_log_probs,
    onnx_session,
    quantize_int8,
)
from metarecipe.data import read_data_dir
from metarecipe.decode.decoder import acoustic_log_probs
from metarecipe.decode.greedy import greedy_decode
from metarecipe.decode.scoring import score
from metarecipe.errors import InputError
from metarecipe.io.model_files import read_model_file
from metarecipe.io.pools import check_feature_dim, load_pools, pad_features


def batches(utts, batch_utts: int) -> list[tuple[list[str], torch.Tensor, torch.Tensor]]:
    """(utterance ids, feats (B, T, F), lengths (B,)) of length-sorted batches, features loaded once."""
    ordered = sorted(utts, key=lambda u: u.frames)
    out = []
    for start in range(0, len(ordered), batch_utts):
        chunk = ordered[start:start + batch_utts]
        out.append(([u.utt for u in chunk], *pad_features(chunk)))
    return out


def run_all(forward, data) -> tuple[float, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Seconds to run forward (feats, lengths) -> (log_probs (B, T', V), lengths (B,)) over every batch, and
    its outputs."""
    start = time.perf_counter()
    outputs = [forward(feats, lengths) for _, feats, lengths in data]
    return time.perf_counter() - start, outputs


def onnx_forward(session):
    """forward (feats, lengths) -> (log_probs, lengths) of an onnxruntime session."""
    return lambda feats, lengths: onnx_log_probs(session, feats, lengths)


def max_abs_diff(got: torch.Tensor, want: torch.Tensor, lengths: torch.Tensor) -> float:
    """Largest |got - want| over valid frames: log-probabilities (B, T', V) twice, lengths (B,)."""
    valid = torch.arange(want.shape[1])[None, :] < lengths[:, None]
    return float((got[valid] - want[valid]).abs().max()) if valid.any() else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model file or compact file")
    p.add_argument("--data", required=True, help="data dir with features (the test set)")
    p.add_argument("--onnx-dir", help="the OUT_DIR of `metarecipe export --onnx` (default: export here)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16, help="utterances per batch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    try:
        loaded = read_model_file(args.model)
        model = model_from_compact(loaded.model) if loaded.is_compact else check_exportable(loaded.model,
                                                                                           args.model)
        pools = load_pools([args.data], loaded.tokens, group_by=None)
        check_feature_dim(pools, loaded.num_mel_bins, args.model)
        refs = read_data_dir(args.data).text
    except InputError as err:
        raise SystemExit(str(err)) from None
    if args.onnx_dir:
        files = {"onnx_fp32": Path(args.onnx_dir) / "model.onnx", "onnx_int8": Path(args.onnx_dir) / "model.int8.onnx"}
        onnx_models = {name: path.read_bytes() for name, path in files.items() if path.exists()}
    else:
        float32 = export_float32(model)
        onnx_models = {"onnx_fp32": float32, "onnx_int8": quantize_int8(float32)}
    utts = [u for pool in pools.values() for u in pool]
    data = batches(utts, args.batch)
    forwards = {"torch": lambda feats, lengths: acoustic_log_probs(model, feats, lengths)}
    forwards.update({name: onnx_forward(onnx_session(serialized, args.threads))
                     for name, serialized in onnx_models.items()})
    times: dict[str, list[float]] = {name: [] for name in forwards}
    outputs = {}
    for forward in forwards.values():  # warm-up: first-call allocations and kernel setup
        run_all(forward, data[:1])
    for _ in range(args.rounds):
        for name, forward in forwards.items():
            seconds, outputs[name] = run_all(forward, data)
            times[name].append(seconds)
    hyps = {name: {utt: hyp for (ids, _, _), (log_probs, lengths) in zip(data, result, strict=True)
                   for utt, hyp in zip(ids, greedy_decode(log_probs, lengths, loaded.tokens.blank), strict=True)}
            for name, result in outputs.items()}
    audio = sum(u.seconds for u in utts)
    rows = []
    for name, result in outputs.items():
        texts = {utt: " ".join(loaded.tokens.decode(h).split()) for utt, h in hyps[name].items()}
        diff = max(max_abs_diff(got, want, lengths)
                   for (got, _), (want, lengths) in zip(result, outputs["torch"], strict=True))
        rows.append({"variant": name, "cer": score(refs, texts, unit="char").total.rate,
                     "same_as_torch": sum(hyps[name][u] == hyps["torch"][u] for u in texts) / max(len(texts), 1),
                     "max_abs_diff": diff, "acoustic_s": statistics.median(times[name]),
                     "rtf": statistics.median(times[name]) / max(audio, 1e-9),
                     "time_vs_torch": statistics.median(t / p for t, p in zip(times[name], times["torch"],
                                                                               strict=True))})
    if args.json:
        print(json.dumps({"model": args.model, "data": args.data, "onnx_dir": args.onnx_dir, "utterances": len(utts),
                          "audio_seconds": audio, "threads": args.threads, "rounds": args.rounds, "rows": rows},
                         indent=1))
        return
    print(f"{args.model} on {args.data}: {len(utts)} utterances, {audio:.0f} s of audio, greedy decoding, "
          f"{args.threads} thread(s), median of {args.rounds} rounds")
    print(f"{'variant':<10} {'CER %':>7} {'same hyp':>9} {'max |diff|':>11} {'acoustic s':>11} {'RTF':>8} "
          f"{'time/torch':>10}")
    for r in rows:
        print(f"{r['variant']:<10} {r['cer']:>7.2f} {100 * r['same_as_torch']:>8.1f}% {r['max_abs_diff']:>11.2e} "
              f"{r['acoustic_s']:>11.3f} {r['rtf']:>8.5f} {r['time_vs_torch']:>9.2f}x")


if __name__ == "__main__":
    main()
