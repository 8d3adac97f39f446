"""`metarecipe adapt --config CONF --exp-dir DIR [key=value ...]`: fine-tune a meta-trained model on a budget."""

from __future__ import annotations

import argparse

from metarecipe.meta.adapt import outcome_line
from metarecipe.meta.adapt_experiment import load_experiment, run_adaptation


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="adapt a meta-trained model to a target on a budget of minutes",
                       description="Fine-tunes a model file (meta-train's final.pt) on `adapt.minutes` of the target "
                                   "training data dir with the meta-learner's own rule (plain SGD, ANIL's head, "
                                   "Meta-SGD's rates) or Adam, on a schedule that scales with the budget, keeping "
                                   "the parameters with the best held-out CER (or loss) on a slice of the budget and "
                                   "stopping early or on divergence. Writes adapted.pt, history.jsonl and adapt.json "
                                   "into the experiment dir; a run that diverged or kept the initial model is a "
                                   "warning on stderr. `data` may instead be a folder of one speaker's recordings "
                                   "(wav, flac, mp3, ogg; any rate and channels) with ONE transcript file, "
                                   "transcripts.txt or transcripts.tsv, one '<file name><TAB or space><transcript>' "
                                   "line per recording (file names relative to the folder, or their stems; a "
                                   "'path<TAB>sentence' header as in Common Voice names the columns): bad lines are "
                                   "reported and left out, features are made with the model's front end in "
                                   "DIR/data, adapt.minutes may be left out (all of the folder, up to an hour) and "
                                   "`lang=xx` normalises the transcripts in that language; `metarecipe transcribe "
                                   "DIR/adapted.pt AUDIO` then transcribes with the adapted model.")
    p.add_argument("--config", help="YAML config (metarecipe.meta.adapt_experiment.AdaptExperiment)")
    p.add_argument("--exp-dir", required=True)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="e.g. model=exp/meta/final.pt data=data/eo/train adapt.minutes=5, or "
                        "model=exp/meta/final.pt data=~/my_recordings")


def run(args: argparse.Namespace) -> int:
    config = load_experiment(args.config, args.overrides)
    result = run_adaptation(config, args.exp_dir, ["metarecipe", *args.argv])
    print(f"{args.exp_dir}: adapted on {result.train_seconds / 60:.2f} min ({result.held_out_seconds / 60:.2f} min "
          f"held out): {outcome_line(result)}")
    return 0
