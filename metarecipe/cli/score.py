"""`metarecipe score --ref TEXT --hyp TEXT`: WER and CER, Kaldi style, per utterance, speaker and language."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metarecipe.decode.scoring import (
    MODES,
    UNIT_NAMES,
    score,
    write_group_table,
    write_per_utt,
    write_summary,
)
from metarecipe.errors import InputError
from metarecipe.io.atomic import write_atomic
from metarecipe.io.kaldi_tables import read_table


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="WER and CER of hypotheses against a Kaldi text file",
                       description="Scores a hypothesis text file against a reference text file (Kaldi `text`: "
                                   "`utt-id transcript` per line; an utt-id alone is an empty transcript) by "
                                   "words and by characters (spaces included), with the error counts of jiwer 4. "
                                   "Prints the %WER and %CER lines; with --out-dir writes wer, cer (compute-wer "
                                   "summaries), per_utt_wer, per_utt_cer (wer_per_utt_details.pl layout) and "
                                   "per_spk_* / per_lang_* tables for the maps given.")
    p.add_argument("--ref", required=True, help="reference text file")
    p.add_argument("--hyp", required=True, help="hypothesis text file")
    p.add_argument("--utt2spk", help="utterance -> speaker map, for per_spk_wer and per_spk_cer")
    p.add_argument("--utt2lang", help="utterance -> language map, for per_lang_wer and per_lang_cer")
    p.add_argument("--mode", choices=MODES, default="present",
                   help="compute-wer's mode: score only utterances with a hypothesis (present, the default), "
                        "score a missing hypothesis as empty (all), or fail on one (strict)")
    p.add_argument("--out-dir", help="where the score files go")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="with --out-dir: a label stored in scores.json beside the rates (repeatable), e.g. "
                        "method=fomaml; `metarecipe report` tabulates scores.json files by their tags")


def parse_tag(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise InputError(f"--tag wants KEY=VALUE, got {item!r}")
    return key, value


def run(args: argparse.Namespace) -> int:
    tags = dict(parse_tag(t) for t in args.tag)
    refs, hyps = read_table(args.ref, need_value=False), read_table(args.hyp, need_value=False)
    groups = {name: read_table(path, need_value=True)
              for name, path in (("spk", args.utt2spk), ("lang", args.utt2lang)) if path}
    try:
        reports = {unit: score(refs, hyps, unit, groups, args.mode) for unit in UNIT_NAMES}
    except ValueError as err:  # a missing hypothesis (--mode strict) or group entry
        raise InputError(str(err)) from err
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for report in reports.values():
            suffix = report.name.lower()
            write_summary(report, out / suffix)
            write_per_utt(report, out / f"per_utt_{suffix}")
            for name in groups:
                write_group_table(report, name, out / f"per_{name}_{suffix}")
        summary = {"tags": tags, "ref": args.ref, "hyp": args.hyp, "utterances": len(refs)}
        for report in reports.values():
            total = report.total
            summary[report.name.lower()] = {"rate": total.rate, "errors": total.errors, "ref_len": total.ref_len,
                                            "ins": total.ins, "del": total.dels, "sub": total.sub}
        write_atomic(out / "scores.json", (json.dumps(summary, indent=1) + "\n").encode())
    for report in reports.values():
        print(report.total.summary(report.name))
    return 0
