"""`metarecipe bundle MODEL OUT`: a model file that holds what decoding needs (front end, LM, search options)."""

from __future__ import annotations

import argparse
from pathlib import Path

from metarecipe.cli.decode import add_search_arguments, search_options
from metarecipe.decode.bundle import decoding_record, model_decoding
from metarecipe.errors import InputError
from metarecipe.io.model_files import read_model_file, write_bundled
from metarecipe.io.pools import check_feature_dim, frontend_of, load_pools
from metarecipe.kernels.beam_search import BeamSearchOptions


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="pack a model with its front end, LM and search options for transcribe",
                       description="Writes OUT: the model file MODEL (training, adapted or compact) with what "
                                   "`metarecipe transcribe OUT audio` needs: the feature front end (fbank "
                                   "settings and CMVN statistics; from --data-dir where MODEL lacks it), the LM "
                                   "(embedded, or with --lm-reference its path and SHA-256) and the search options.")
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--data-dir", help="a data directory with features (compute-feats) of the model's training data: "
                                      "the front end, for models that hold none")
    p.add_argument("--lm", help="ARPA language model (.arpa or .arpa.gz)")
    p.add_argument("--lm-unit", choices=("word", "token"), default="word",
                   help="word: an LM over words; token: an LM over the model's tokens (train-lm --unit char)")
    p.add_argument("--lm-reference", action="store_true",
                   help="store the LM's path and SHA-256 instead of the LM (for LMs too large to copy)")
    add_search_arguments(p, BeamSearchOptions())


def run(args: argparse.Namespace) -> int:
    loaded = read_model_file(args.model)
    frontend = loaded.frontend
    if args.data_dir is not None:
        pools = load_pools([args.data_dir], loaded.tokens, group_by=None)
        check_feature_dim(pools, loaded.num_mel_bins, args.data_dir)
        frontend = frontend_of([u for utts in pools.values() for u in utts])
        if frontend is None:
            raise InputError(f"{args.data_dir}: its features record no fbank settings (fbank.json) or mix several; "
                             "re-run `metarecipe compute-feats` on it")
    if frontend is None:
        raise InputError(f"{args.model}: holds no feature front end (a model of an earlier version): give the data "
                         "directory it was trained or adapted on with --data-dir")
    options = search_options(args)
    model_decoding(loaded, args.lm, args.lm_unit, options)  # the LM is read and checked against the tokens
    write_bundled(args.model, Path(args.out), frontend,
                  decoding_record(options, args.lm, args.lm_unit, embed=not args.lm_reference))
    lm = "no LM" if args.lm is None else f"LM {args.lm} ({'referenced' if args.lm_reference else 'embedded'})"
    print(f"{args.out}: {args.model} with its front end ({frontend.cmvn} CMVN), {lm}, beam {options.beam}")
    return 0
