"""`metarecipe transcribe MODEL AUDIO...`: audio files to transcripts with word times, in one command."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from metarecipe.cli.decode import add_search_arguments, search_options
from metarecipe.devices import resolve_device
from metarecipe.errors import InputError
from metarecipe.inference.formats import FORMATS, render
from metarecipe.inference.recognizer import Recognizer
from metarecipe.inference.vad import KINDS
from metarecipe.io.atomic import write_atomic

EXTENSIONS = {"text": "txt", "json": "json", "ctm": "ctm", "srt": "srt", "vtt": "vtt"}


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="transcribe audio files (word times, subtitles) with a bundled model",
                       description="Transcribes each AUDIO (wav, flac, mp3, ogg, ... at any rate and channel count; "
                                   "- for standard input): speech found by a voice-activity detector, features as "
                                   "in training, the CTC beam search with the model's LM, word times and "
                                   "confidences from a forced alignment. MODEL is a model file bundled by "
                                   "`metarecipe bundle` (front end, LM, search options); options given here "
                                   "replace the bundled ones. Without --out the transcripts go to standard output.")
    p.add_argument("model")
    p.add_argument("audio", nargs="+")
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--out", help="directory for one file per recording: <name>.<txt|json|ctm|srt|vtt>")
    p.add_argument("--lm", help="ARPA LM instead of the bundled one")
    p.add_argument("--lm-unit", choices=("word", "token"), help="unit of --lm (default: the bundled unit, or word)")
    p.add_argument("--vad", choices=KINDS, default="auto",
                   help="voice-activity detector: silero, energy, or auto (silero where it imports)")
    p.add_argument("--device", default="cpu", help="where the acoustic model runs: cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, help="CPU threads of the acoustic model (default: torch's)")
    add_search_arguments(p, None)


def output_names(audio: list[str], fmt: str) -> list[str]:
    """The output file name of each recording (<stem>.<ext>; stdin: stdin.<ext>); InputError when two clash."""
    names = [f"{'stdin' if a == '-' else Path(a).stem}.{EXTENSIONS[fmt]}" for a in audio]
    seen: dict[str, str] = {}
    for source, name in zip(audio, names, strict=True):
        if name in seen:
            raise InputError(f"--out: {seen[name]} and {source} would both write {name}; transcribe them apart")
        seen[name] = source
    return names


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.audio.count("-") > 1:
        raise InputError("standard input (-) can be read once")
    names = output_names(args.audio, args.format) if args.out else None
    recognizer = Recognizer.load(args.model, args.lm, args.lm_unit, vad=args.vad,
                                 device=str(resolve_device(args.device, "--device")))
    recognizer.decoding.options = search_options(args, recognizer.decoding.options)
    failed = []
    for index, audio in enumerate(args.audio):
        start = time.perf_counter()
        try:
            transcript = recognizer.transcribe(audio)
        except InputError as err:
            print(f"metarecipe transcribe: {err} (skipped)", file=sys.stderr, flush=True)
            failed.append(audio)
            continue
        seconds = time.perf_counter() - start
        text = render(transcript, args.format)
        if names is not None:
            write_atomic(Path(args.out) / names[index], text.encode("utf-8"))
        elif args.format == "text" and len(args.audio) > 1:
            sys.stdout.write(f"{audio}\t{text}")
        else:
            sys.stdout.write(text)
        sys.stdout.flush()
        rtf = seconds / max(transcript.duration, 1e-9)
        print(f"{audio}: {transcript.duration:.1f} s of audio, {len(transcript.segments)} segment(s), "
              f"{len(transcript.words)} word(s) in {seconds:.1f} s (RTF {rtf:.3f})", file=sys.stderr, flush=True)
    if failed:
        print(f"metarecipe transcribe: {len(failed)} of {len(args.audio)} recording(s) failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0
