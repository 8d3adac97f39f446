"""`metarecipe decode MODEL DATA_DIR OUT_DIR`: CTC beam search (or greedy) with an optional n-gram LM."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from metarecipe.decode.bundle import read_lm
from metarecipe.decode.decoder import best_texts, decode, log_probs_of
from metarecipe.devices import resolve_device
from metarecipe.errors import InputError
from metarecipe.io.atomic import write_atomic
from metarecipe.io.model_files import read_model_file
from metarecipe.io.pools import check_feature_dim, load_pools
from metarecipe.kernels.beam_search import BeamSearchOptions


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="decode a data directory with a CTC model",
                       description="Runs the acoustic model over every utterance of DATA_DIR (features from "
                                   "compute-feats) and searches with the CTC prefix beam search, optionally fused "
                                   "with an ARPA n-gram LM (ours from train-lm, KenLM's or SRILM's). Writes "
                                   "OUT_DIR/hyp (Kaldi text: utt-id words), OUT_DIR/nbest (utt-id rank total "
                                   "acoustic lm text) and OUT_DIR/decode.json (options, timing). Score with "
                                   "`metarecipe score --ref DATA_DIR/text --hyp OUT_DIR/hyp`.")
    p.add_argument("model", help="model file (metarecipe.io.model_files) or compact file (metarecipe compress)")
    p.add_argument("data_dir")
    p.add_argument("out_dir")
    p.add_argument("--lm", help="ARPA language model (.arpa or .arpa.gz)")
    p.add_argument("--lm-unit", choices=("word", "token"), default="word",
                   help="word: an LM over words, scored at word ends; token: an LM over the model's tokens "
                        "(train-lm --unit char), scored on every token (default word)")
    p.add_argument("--greedy", action="store_true", help="best-path decoding instead of the beam search")
    add_search_arguments(p, BeamSearchOptions())
    p.add_argument("--batch", type=int, default=16, help="utterances per acoustic model batch")
    p.add_argument("--backend", choices=("cpp", "numba"), help="beam search backend (default: fastest here)")
    p.add_argument("--device", default="cpu", help="where the acoustic model runs: cpu, cuda, cuda:N or auto "
                                                   "(compact files: cpu)")
    p.add_argument("--threads", type=int, help="CPU threads of the acoustic model (default: torch's)")


def write_text(path: Path, lines: list[str]) -> None:
    write_atomic(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))


def add_search_arguments(p, defaults: BeamSearchOptions | None) -> None:
    """The beam search options (--beam ... --nbest); defaults None: each left None unless given (an override of
    the options a model file was bundled with, `search_options`)."""
    def default(name):
        return getattr(defaults, name) if defaults is not None else None
    p.add_argument("--beam", type=int, default=default("beam"))
    p.add_argument("--beam-threshold", type=float, default=default("beam_threshold"),
                   help="drop hypotheses this far (ln) below the best")
    p.add_argument("--token-threshold", type=float, default=default("token_threshold"),
                   help="per frame, try only tokens within this (ln, negative) of the best token")
    p.add_argument("--token-beam", type=int, default=None, help="per frame, try at most this many tokens")
    p.add_argument("--blank-skip", type=float, default=default("blank_skip"),
                   help="skip frames whose blank probability reaches this (1 or more: never)")
    p.add_argument("--lm-weight", type=float, default=default("lm_weight"))
    p.add_argument("--insertion-bonus", type=float, default=default("insertion_bonus"),
                   help="added per word (word LM) or per token (token LM, no LM)")
    p.add_argument("--oov-penalty", type=float, default=default("oov_penalty"),
                   help="word LM: added for each word outside the LM's vocabulary (ln)")
    p.add_argument("--lexicon-only", action="store_const", const=True, default=default("lexicon_only"),
                   help="word LM: only words of the LM's vocabulary")
    p.add_argument("--nbest", type=int, default=default("nbest"))


def search_options(args: argparse.Namespace, base: BeamSearchOptions | None = None) -> BeamSearchOptions:
    """The options of add_search_arguments over `base` (default BeamSearchOptions()): those given replace its."""
    given = {field.name: getattr(args, field.name) for field in dataclasses.fields(BeamSearchOptions)
             if getattr(args, field.name) is not None}
    try:
        return dataclasses.replace(base or BeamSearchOptions(), **given)
    except ValueError as err:  # the options' own range check
        raise InputError(f"search options: {err}") from err


def run(args: argparse.Namespace) -> int:
    options = search_options(args)
    device = resolve_device(args.device, "--device")
    for name in ("threads", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name} must be at least 1, got {value}")
    loaded = read_model_file(args.model, device)
    model, tokens, num_mel_bins = loaded.model, loaded.tokens, loaded.num_mel_bins
    pools = load_pools([args.data_dir], tokens, group_by=None)
    check_feature_dim(pools, num_mel_bins, args.model)
    utts = [u for pool in pools.values() for u in pool]
    tables = read_lm(args.lm, tokens, args.lm_unit) if args.lm and not args.greedy else None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log_probs = log_probs_of(model, utts, args.batch, progress=True)
    acoustic_seconds = time.perf_counter() - start
    start = time.perf_counter()
    nbest = decode(log_probs, tokens, options, tables, greedy=args.greedy, backend=args.backend, progress=True)
    search_seconds = time.perf_counter() - start
    texts = best_texts(nbest, tokens)
    audio_seconds = sum(u.seconds for u in utts)
    write_text(out / "hyp", [f"{utt} {texts[utt]}".rstrip() for utt in sorted(texts)])
    write_text(out / "nbest", [f"{utt} {rank} {h.score:.4f} {h.acoustic:.4f} {h.lm:.4f} "
                               f"{' '.join(tokens.decode(h.tokens).split())}".rstrip()
                               for utt in sorted(nbest) for rank, h in enumerate(nbest[utt], start=1)])
    summary = {"model": args.model, "data_dir": args.data_dir, "lm": args.lm, "lm_unit": args.lm_unit,
               "greedy": args.greedy, "options": vars(options), "utterances": len(texts),
               "threads": torch.get_num_threads(), "audio_seconds": round(audio_seconds, 3),
               "acoustic_seconds": round(acoustic_seconds, 3), "search_seconds": round(search_seconds, 3),
               "rtf": round((acoustic_seconds + search_seconds) / max(audio_seconds, 1e-9), 6),
               "ms_per_utterance": round(1000 * search_seconds / max(len(texts), 1), 3)}
    write_text(out / "decode.json", [json.dumps(summary, indent=1)])
    print(f"{args.data_dir}: {len(texts)} utterances decoded in {search_seconds:.2f} s "
          f"({summary['ms_per_utterance']:.2f} ms per utterance; acoustic model {acoustic_seconds:.1f} s) -> {out}")
    return 0
