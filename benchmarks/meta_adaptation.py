"""Meta-training on the demo corpus, then adaptation to an unseen language on a budget of minutes: dev CER of
each algorithm beside `scratch` (the same minutes, no source languages).

Builds the demo corpus (espeak-ng + fortunes, offline) in --work unless it is there, extracts features, meta-trains
every algorithm named on the source languages while tracking the query loss of a held-out language, adapts each to
--minutes of the target language and decodes its dev set greedily. Prints a table, writes --json and a PNG of the
held-out query loss over meta-training.

    python benchmarks/meta_adaptation.py --work exp/meta_adaptation --algos fomaml multilingual scratch
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metarecipe.data import read_data_dir
from metarecipe.data.corpora import get_corpus
from metarecipe.decode import error_rate
from metarecipe.decode.greedy import greedy_decode
from metarecipe.features import compute_feats
from metarecipe.io.model_files import save_model
from metarecipe.io.pools import load_pools
from metarecipe.meta import InnerLoop, make_algorithm
from metarecipe.meta.adapt import AdaptConfig, adapt
from metarecipe.meta.sampling import collate
from metarecipe.meta.trainer import MetaTrainConfig, meta_train
from metarecipe.models import BatchedCTCModel, ModelConfig
from metarecipe.text.tokens import TokenTable


def prepare(work: Path, langs: list[str], minutes: float) -> dict[str, Path]:
    """Demo corpus -> Kaldi data dirs with features; returns {"lang/split": path}."""
    dirs = get_corpus("demo")(work / "corpus", work / "data", langs, splits=("train", "dev"), minutes=minutes)
    for path in dirs.values():
        compute_feats(path, nj=2, progress=False)
    return dirs


def dev_cer(model, params, pool, tokens: TokenTable, batch_utts: int = 16) -> float:
    """Greedy-decoding CER (%) of the model with `params` (unstacked) on every utterance of `pool`."""
    refs, hyps = [], []
    stacked = {n: v.detach().unsqueeze(0) for n, v in params.items()}
    with torch.no_grad():
        for start in range(0, len(pool), batch_utts):
            chunk = pool[start:start + batch_utts]
            tasks = collate([chunk], len(chunk))
            log_probs, lengths = model.functional_forward(stacked, tasks.feats, tasks.lengths)
            for utt, hyp in zip(chunk, greedy_decode(log_probs[0], lengths[0], tokens.blank), strict=True):
                refs.append(tokens.decode(utt.targets))
                hyps.append(tokens.decode(hyp))
    return error_rate(zip(refs, hyps, strict=True)).rate


def save_models(out: Path, name: str, algo, model, adapted_params: dict, tokens: TokenTable, target: str) -> None:
    """Writes the meta-trained model (NAME_meta.pt) and the one adapted to the target (NAME_TARGET.pt)."""
    if not isinstance(model, BatchedCTCModel):
        print(f"{name}: only single-column CTC models are saved; skipped")
        return
    save_model(out / f"{name}_meta.pt", model, tokens, {"algorithm": name})
    adapted = BatchedCTCModel(model.config)
    with torch.no_grad():
        for param_name, value in adapted_params.items():
            adapted.params[param_name].copy_(value)
    save_model(out / f"{name}_{target}.pt", adapted, tokens, {"algorithm": name, "adapted_to": target})


def run(args) -> dict:
    work = Path(args.work)
    langs = sorted({*args.sources, args.held_out, args.target})
    dirs = prepare(work, langs, args.corpus_minutes)
    tokens = TokenTable.from_texts(t for lang in langs for t in read_data_dir(dirs[f"{lang}/train"]).text.values())
    train = load_pools([dirs[f"{lang}/train"] for lang in langs], tokens)
    sources = {lang: train[lang] for lang in args.sources}
    held_out = {args.held_out: train[args.held_out]}
    target_dev = load_pools([dirs[f"{args.target}/dev"]], tokens)[args.target][: args.dev_utts]
    cfg = ModelConfig(vocab_size=len(tokens), conv_channels=args.conv_channels, d_model=args.d_model,
                      gru_hidden=args.hidden, gru_layers=args.layers)
    train_cfg = MetaTrainConfig(steps=args.steps, tasks_per_batch=args.tasks, support_seconds=args.support_seconds,
                                query_seconds=args.query_seconds, meta_lr=args.meta_lr, eval_every=args.eval_every)
    results = []
    for name in args.algos:
        torch.manual_seed(args.seed)
        algo = make_algorithm(name, BatchedCTCModel(cfg), InnerLoop(lr=args.inner_lr))
        start = time.perf_counter()
        log = []
        if algo.meta_trains:
            log = meta_train(algo, sources, train_cfg, held_out, work / f"metrics_{name}.jsonl")
        meta_seconds = time.perf_counter() - start
        adaptation = algo.adaptation()
        adapted = adapt(adaptation.model, train[args.target],
                        AdaptConfig(minutes=args.minutes, lr=args.adapt_lr, max_steps=args.adapt_steps, seed=args.seed),
                        adaptation.rule, adaptation.alphas)
        if args.save_models:
            save_models(Path(args.save_models), name, algo, adaptation.model, adapted.params, tokens, args.target)
        curve = [(r["step"], r["held_out_query_loss"]) for r in log if "held_out_query_loss" in r]
        results.append({"algorithm": name, "meta_steps": args.steps if algo.meta_trains else 0,
                        "meta_seconds": meta_seconds, "held_out_curve": curve,
                        "adapt_steps": adapted.history[-1][0], "adapt_minutes": adapted.train_seconds / 60,
                        "dev_cer": dev_cer(adaptation.model, adapted.params, target_dev, tokens)})
        print(f"{name}: dev CER {results[-1]['dev_cer']:.1f}%", flush=True)
    return {"target": args.target, "held_out": args.held_out, "sources": args.sources, "minutes": args.minutes,
            "dev_utterances": len(target_dev), "model": cfg.__dict__, "results": results}


def report(summary: dict, plot_path: Path | None) -> None:
    print(f"target {summary['target']} ({summary['minutes']:g} min of adaptation data, "
          f"{summary['dev_utterances']} dev utterances); held-out language {summary['held_out']}")
    print(f"{'algorithm':<13} {'meta steps':>10} {'meta min':>9} {'held-out query loss':>22} {'dev CER %':>10}")
    for r in summary["results"]:
        curve = r["held_out_curve"]
        loss = f"{curve[0][1]:.3f} -> {curve[-1][1]:.3f}" if curve else "-"
        print(f"{r['algorithm']:<13} {r['meta_steps']:>10} {r['meta_seconds'] / 60:>9.1f} {loss:>22} "
              f"{r['dev_cer']:>10.1f}")
    if plot_path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for r in summary["results"]:
            if r["held_out_curve"]:
                steps, losses = zip(*r["held_out_curve"], strict=True)
                ax.plot(steps, losses, label=r["algorithm"])
        ax.set_xlabel("meta-training step")
        ax.set_ylabel(f"query loss on {summary['held_out']} (after inner loop)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot_path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="exp/meta_adaptation")
    parser.add_argument("--sources", nargs="+", default=["de", "es", "it", "pl", "cs", "ru"])
    parser.add_argument("--held-out", default="pt", help="language whose query loss tracks meta-training")
    parser.add_argument("--target", default="eo", help="the unseen language adapted to")
    parser.add_argument("--algos", nargs="+", default=["fomaml", "multilingual", "scratch"])
    parser.add_argument("--corpus-minutes", type=float, default=30.0, help="demo corpus minutes per language")
    parser.add_argument("--minutes", type=float, default=5.0, help="adaptation budget")
    parser.add_argument("--steps", type=int, default=600, help="meta-training steps")
    parser.add_argument("--tasks", type=int, default=4, help="tasks per meta-batch")
    parser.add_argument("--support-seconds", type=float, default=15.0)
    parser.add_argument("--query-seconds", type=float, default=15.0)
    parser.add_argument("--meta-lr", type=float, default=1e-3)
    parser.add_argument("--inner-lr", type=float, default=0.1)
    parser.add_argument("--adapt-lr", type=float, default=0.1)
    parser.add_argument("--adapt-steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--dev-utts", type=int, default=150)
    parser.add_argument("--conv-channels", type=int, default=16)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-models", metavar="DIR", help="write the meta-trained and adapted models here")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--plot", metavar="PNG")
    args = parser.parse_args(argv)
    summary = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    report(summary, Path(args.plot) if args.plot else None)


if __name__ == "__main__":
    main()
