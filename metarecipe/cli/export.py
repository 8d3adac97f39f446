"""`metarecipe export MODEL OUT_DIR --onnx`: the acoustic model as ONNX files (float32 and int8 weights) for
deployment runtimes, each checked in onnxruntime against the torch model before anything is written."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from metarecipe.compress.export import model_from_compact
from metarecipe.compress.onnx_export import (
    DEFAULT_OPSET,
    OPSETS,
    check_exportable,
    export_float32,
    file_record,
    graph_record,
    quantize_int8,
    verify_export,
)
from metarecipe.errors import InputError
from metarecipe.io.atomic import write_atomic
from metarecipe.io.model_files import read_model_file


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="export a model to ONNX (float32 and int8) for deployment runtimes",
                       description="Writes OUT_DIR/model.onnx (float32), OUT_DIR/model.int8.onnx (int8 weights "
                                   "through onnxruntime's dynamic quantization), OUT_DIR/tokens.txt and "
                                   "OUT_DIR/export.json. Inputs: feats (batch, frames, mel bins) float32, features "
                                   "normalised as in training, and lengths (batch,) int64; outputs: log_probs "
                                   "(batch, frames / 4, tokens) and out_lengths (batch,) int64. Both files are run in "
                                   "onnxruntime on random features of several lengths and compared with the torch "
                                   "model first: a float32 difference beyond --tolerance writes nothing. A compact "
                                   "model (metarecipe compress) is exported from its dequantized weights.")
    p.add_argument("model", help="model file (BiGRU or Transformer encoder) or compact file (metarecipe compress)")
    p.add_argument("out_dir")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--onnx", action="store_true", help="export to ONNX (the one format so far)")
    p.add_argument("--no-int8", action="store_true", help="write the float32 model only")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1} (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the check (default 1)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest |difference| of the float32 model's log-probabilities from the torch model's over "
                        "valid frames (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise InputError(f"--tolerance must be a positive number, got {args.tolerance}")
    if args.opset not in OPSETS:
        raise InputError(f"--opset {args.opset}: choose {OPSETS.start} to {OPSETS.stop - 1}")
    loaded = read_model_file(args.model)
    model = model_from_compact(loaded.model) if loaded.is_compact else check_exportable(loaded.model, args.model)
    float32 = export_float32(model, args.opset)
    int8 = None if args.no_int8 else quantize_int8(float32)
    verification = verify_export(model, float32, int8, args.tolerance, args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"float32": file_record("model.onnx", float32)}
    write_atomic(out / "model.onnx", float32)
    if int8 is None:
        (out / "model.int8.onnx").unlink(missing_ok=True)  # an earlier export's, which export.json would not list
    else:
        files["int8"] = file_record("model.int8.onnx", int8)
        write_atomic(out / "model.int8.onnx", int8)
    tokens = loaded.tokens
    write_atomic(out / "tokens.txt", "".join(f"{s} {i}\n" for i, s in enumerate(tokens.symbols)).encode("utf-8"))
    frontend = None if loaded.frontend is None else loaded.frontend.record()  # the features the model reads
    if frontend is not None and frontend["global_stats"] is not None:
        frontend["global_stats"] = frontend["global_stats"].tolist()
    summary = {"model": args.model, "compact": loaded.is_compact, "format": "onnx", "opset": args.opset,
               "files": files, "tokens": "tokens.txt", "blank": tokens.blank, "frontend": frontend,
               **graph_record(model, float32), "verification": verification}
    write_atomic(out / "export.json", (json.dumps(summary, indent=1) + "\n").encode("utf-8"))
    fp32, q8 = verification["float32"], verification["int8"]
    int8_note = "" if q8 is None else (f"; model.int8.onnx: max |diff| {q8['max_abs_diff']:.3g}, same best token on "
                                       f"{100 * q8['argmax_agreement']:.1f}% of frames")
    print(f"{args.model} -> {out}: model.onnx matches the torch model (max |diff| {fp32['max_abs_diff']:.2g} over "
          f"valid frames){int8_note}")
    return 0
