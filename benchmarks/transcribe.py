"""`metarecipe transcribe` on a long recording against `decode` on the same utterances.

Builds a recording from N utterances of a data directory with features (each whole, as decode sees it, placed
after a silence of 0.8-2 s with faint noise), as mp3 at 44.1 kHz stereo; transcribes it with the bundled model
(1 thread, its own process, peak memory from the kernel) and decodes the same utterances from their feature
files with the same model, options and LM. Reports both CERs over the utterances' joined text, where each
utterance's first and last word fall against where its speech was placed (the utterance's offset in the recording
plus where its speech starts and ends in it: its 10 ms frames within TRIM_DB of its loudest), and the real-time
factor. With
--hours H it also transcribes a recording of H hours (the first one repeated) for its peak memory.

    python benchmarks/transcribe.py --model exp/adapt/multilingual_es_5m_s0/recognizer.pt --data data/es/test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from metarecipe.data.audio import read_audio
from metarecipe.data.datadir import read_data_dir
from metarecipe.decode.bundle import model_decoding
from metarecipe.decode.decoder import best_texts, decode, log_probs_of
from metarecipe.decode.scoring import edit_counts
from metarecipe.io.model_files import read_model_file
from metarecipe.io.pools import load_pools

RATE = 44100
TRIM_DB = 35.0  # a prompt's speech: its 10 ms frames within this of its loudest frame
NOISE_DBFS = -60.0  # the faint noise of the silences between utterances


def speech_span(samples: np.ndarray, rate: int) -> tuple[int, int]:
    """[first, last) sample of the frames within TRIM_DB of the loudest 10 ms frame."""
    hop = rate // 100
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
    energy = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(energy >= energy.max() - TRIM_DB)
    return int(loud[0] * hop), int((loud[-1] + 1) * hop)


def build_recording(data_dir: Path, count: int, rng: np.random.Generator):
    """(stereo samples (N, 2) at RATE, [(utt, start s, end s of its speech)]) of the first `count` utterances."""
    data = read_data_dir(data_dir, features=False)
    pieces, placed, cursor = [], [], 0
    noise = 10 ** (NOISE_DBFS / 20)
    for utt in data.utterances[:count]:
        samples = read_audio(data.wav_scp[data.recording_of(utt)], RATE)
        first, last = speech_span(samples, RATE)
        gap = int(rng.uniform(0.8, 2.0) * RATE)
        pieces += [noise * rng.standard_normal(gap).astype(np.float32), samples]
        placed.append((utt, (cursor + gap + first) / RATE, (cursor + gap + last) / RATE))
        cursor += gap + len(samples)
    pieces.append(noise * rng.standard_normal(RATE).astype(np.float32))
    mono = np.concatenate(pieces)
    return np.stack([mono, 0.8 * mono], axis=1), placed


def transcribe_measured(model: str, audio: Path, extra: list[str]) -> tuple[float, float, dict]:
    """(wall seconds, peak MiB, JSON transcript) of `metarecipe transcribe` on 1 thread."""
    code = ("import resource, sys; from metarecipe.cli.main import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")
    argv = [sys.executable, "-c", code, "transcribe", model, str(audio), "--format", "json", "--threads", "1", *extra]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"transcribe failed:\n{done.stderr[-2000:]}")
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return seconds, peak_kib / 1024, json.loads(done.stdout)


def cer(ref: str, hyp: str) -> float:
    counts = edit_counts(list(ref), list(hyp))
    return 100.0 * counts.errors / max(counts.ref_len, 1)


def boundary_errors(words: list[dict], placed: list[tuple[str, float, float]]) -> dict:
    """Per utterance, its first word's start minus where it was placed, and its last word's end minus its placed
    end (words belong to the utterance whose span holds their midpoint, or the nearest)."""
    starts, ends, outside = [], [], 0
    for _, begin, end in placed:
        mine = [w for w in words if begin - 0.5 <= (w["start"] + w["end"]) / 2 <= end + 0.5]
        if mine:
            starts.append(mine[0]["start"] - begin)
            ends.append(mine[-1]["end"] - end)
            outside += sum(w["start"] < begin - 0.1 or w["end"] > end + 0.1 for w in mine)
    both = np.abs(np.array(starts + ends))
    return {"utterances_with_words": len(starts), "start_mean": float(np.mean(starts)),
            "end_mean": float(np.mean(ends)), "abs_max": float(both.max()), "within_0.1": float(np.mean(both <= 0.1)),
            "words_outside_0.1": outside}


def decode_subset(model: str, data_dir: Path, utts: list[str]) -> dict[str, str]:
    """utt -> `decode`'s text of the utterances with the model's bundled options and LM (1 thread)."""
    loaded = read_model_file(model)
    decoding = model_decoding(loaded)
    pools = load_pools([data_dir], loaded.tokens, group_by=None)
    chosen = [u for pool in pools.values() for u in pool if u.utt in set(utts)]
    log_probs = log_probs_of(loaded.model, chosen)
    return best_texts(decode(log_probs, loaded.tokens, decoding.options, decoding.lm), loaded.tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a bundled model file (metarecipe bundle)")
    parser.add_argument("--data", required=True, help="data directory with features of the target's test set")
    parser.add_argument("--count", type=int, default=24, help="utterances in the recording")
    parser.add_argument("--hours", type=float, default=0.0, help="also a recording this long, for peak memory")
    parser.add_argument("--vad", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    data = read_data_dir(Path(args.data), features=False)
    with tempfile.TemporaryDirectory() as tmp:
        stereo, placed = build_recording(Path(args.data), args.count, rng)
        audio = Path(tmp) / "recording.mp3"
        soundfile.write(audio, stereo, RATE, format="MP3")
        seconds, peak, transcript = transcribe_measured(args.model, audio, ["--vad", args.vad])
        utts = [u for u, _, _ in placed]
        decoded = decode_subset(args.model, Path(args.data), utts)
        ref = " ".join(" ".join(data.text[u].split()) for u in utts)
        result = {"utterances": len(utts), "audio_seconds": transcript["duration"],
                  "segments": len(transcript["segments"]),
                  "cer_transcribe": cer(ref, " ".join(transcript["text"].split())),
                  "cer_decode": cer(ref, " ".join(" ".join(decoded.get(u, "").split()) for u in utts)),
                  "rtf_1_thread": seconds / transcript["duration"], "peak_mib": peak,
                  "boundaries": boundary_errors([w for s in transcript["segments"] for w in s["words"]], placed)}
        if args.hours > 0:
            repeats = int(np.ceil(args.hours * 3600 / len(stereo) * RATE))
            long_audio = Path(tmp) / "long.mp3"
            with soundfile.SoundFile(long_audio, "w", RATE, 2, format="MP3") as out:
                for _ in range(repeats):
                    out.write(stereo)
            seconds, peak, long_transcript = transcribe_measured(args.model, long_audio, ["--vad", args.vad])
            result["long"] = {"audio_seconds": long_transcript["duration"], "seconds": seconds,
                              "rtf_1_thread": seconds / long_transcript["duration"], "peak_mib": peak}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    b = result["boundaries"]
    print("| utterances | audio s | segments | CER transcribe | CER decode | RTF (1 thread) | peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {result['utterances']} | {result['audio_seconds']:.1f} | {result['segments']} | "
          f"{result['cer_transcribe']:.1f} | {result['cer_decode']:.1f} | {result['rtf_1_thread']:.3f} | "
          f"{result['peak_mib']:.0f} |")
    print(f"\nfirst word start - placed start: mean {b['start_mean']:+.3f} s; last word end - placed end: mean "
          f"{b['end_mean']:+.3f} s; |error| max {b['abs_max']:.3f} s, {100 * b['within_0.1']:.0f}% within 0.1 s; "
          f"words more than 0.1 s outside their utterance: {b['words_outside_0.1']}")
    if "long" in result:
        long = result["long"]
        print(f"\n{long['audio_seconds'] / 3600:.2f} h recording: {long['seconds']:.0f} s (RTF "
              f"{long['rtf_1_thread']:.3f}), peak memory {long['peak_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
