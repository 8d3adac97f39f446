"""Seconds per meta-step and peak memory: the task-batched engine beside a loop over tasks with cloned modules.

The loop is how learn2learn and higher do it: an ordinary nn.Module (nn.GRU and all), one task at a time, the
inner step applied to a clone of the parameters through torch.func.functional_call, create_graph for second
order. torch.func.vmap cannot batch it (no batching rule for GRU: pytorch issues 134606, 105982), which the
table reports. Each measurement runs in a fresh process so that its peak resident memory is its own.

    python benchmarks/meta_step.py --tasks 4 8 16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import time

import torch
from torch import nn

from metarecipe.kernels import ctc_loss
from metarecipe.meta import InnerLoop, MetaBatch, TaskSet, make_algorithm
from metarecipe.models import BatchedCTCModel, ModelConfig


class LoopModel(nn.Module):
    """The same architecture as BatchedCTCModel as an ordinary module."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, cfg.conv_channels, 3, 2), nn.Conv2d(cfg.conv_channels,
                                                                                  cfg.conv_channels, 3, 2)
        freq = ((cfg.num_mel_bins - 3) // 2 + 1 - 3) // 2 + 1
        self.proj = nn.Linear(cfg.conv_channels * freq, cfg.d_model)
        self.grus = nn.ModuleList()
        self.norms = nn.ModuleList()
        size = cfg.d_model
        for _ in range(cfg.gru_layers):
            self.grus.append(nn.GRU(size, cfg.gru_hidden, batch_first=True, bidirectional=True))
            self.norms.append(nn.LayerNorm(2 * cfg.gru_hidden))
            size = 2 * cfg.gru_hidden
        self.head = nn.Linear(size, cfg.vocab_size)

    def forward(self, feats, lengths):
        x = torch.relu(self.conv2(torch.relu(self.conv1(feats.unsqueeze(1)))))
        b, c, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        out_lengths = torch.div(torch.div(lengths - 3, 2, rounding_mode="floor") - 2, 2, rounding_mode="floor") + 1
        for gru, norm in zip(self.grus, self.norms, strict=True):
            packed = nn.utils.rnn.pack_padded_sequence(x, out_lengths, batch_first=True, enforce_sorted=False)
            x, _ = nn.utils.rnn.pad_packed_sequence(gru(packed)[0], batch_first=True, total_length=t)
            x = norm(x)
        return self.head(x).log_softmax(-1), out_lengths


def loop_meta_step(model: LoopModel, batch: MetaBatch, lr: float, second_order: bool) -> float:
    """MAML/FOMAML one task at a time; returns the query loss; gradients land in model's .grad."""
    params = dict(model.named_parameters())
    total = 0.0
    for i in range(batch.support.num_tasks):
        def loss(p, tasks, i=i):
            log_probs, lengths = torch.func.functional_call(model, p, (tasks.feats[i], tasks.lengths[i]))
            return ctc_loss(log_probs.transpose(0, 1), tasks.targets[i], lengths, tasks.target_lengths[i],
                            zero_infinity=True)
        grads = torch.autograd.grad(loss(params, batch.support), list(params.values()), create_graph=second_order)
        adapted = {n: p - lr * (g if second_order else g.detach())
                   for (n, p), g in zip(params.items(), grads, strict=True)}
        query = loss(adapted, batch.query) / batch.support.num_tasks
        query.backward()
        total += float(query)
    return total


def random_batch(cfg: ModelConfig, tasks: int, utts: int, frames: int, seed: int = 0) -> MetaBatch:
    gen = torch.Generator().manual_seed(seed)

    def task_set():
        return TaskSet(torch.randn(tasks, utts, frames, cfg.num_mel_bins, generator=gen),
                       torch.randint(frames // 2, frames + 1, (tasks, utts), generator=gen),
                       torch.randint(1, cfg.vocab_size, (tasks, utts, frames // 12), generator=gen),
                       torch.randint(frames // 24, frames // 12 + 1, (tasks, utts), generator=gen))

    return MetaBatch(task_set(), task_set())


def measure(impl: str, order: str, tasks: int, cfg: ModelConfig, utts: int, frames: int, repeats: int,
            threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch = random_batch(cfg, tasks, utts, frames)
    second = order == "second"
    if impl == "engine":
        algo = make_algorithm("maml" if second else "fomaml", BatchedCTCModel(cfg), InnerLoop(lr=0.1))

        def step():
            algo.meta_gradient(batch)
    else:
        model = LoopModel(cfg)

        def step():
            model.zero_grad()
            loop_meta_step(model, batch, 0.1, second)
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"impl": impl, "order": order, "tasks": tasks, "seconds": statistics.median(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _in_child(args):
    return measure(*args)


def vmap_applies(cfg: ModelConfig) -> str:
    """Whether torch.func.vmap batches the looped module over stacked parameters (it does not for nn.GRU)."""
    model = LoopModel(cfg)
    stacked = {n: p.detach().unsqueeze(0).repeat(2, *[1] * p.dim()) for n, p in model.named_parameters()}
    feats, lengths = torch.randn(2, 1, 60, cfg.num_mel_bins), torch.full((2, 1), 60)
    try:
        torch.func.vmap(lambda p, f, n: torch.func.functional_call(model, p, (f, n))[0])(stacked, feats, lengths)
    except Exception as err:  # the reason is the report
        return f"n/a ({type(err).__name__}: {str(err).splitlines()[0][:70]})"
    return "runs"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", type=int, default=[4, 8, 16])
    parser.add_argument("--utts", type=int, default=2, help="utterances per support and query set")
    parser.add_argument("--frames", type=int, default=200, help="frames per utterance (10 ms each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    cfg = ModelConfig(vocab_size=64, d_model=args.d_model, gru_hidden=args.hidden)
    jobs = [(impl, order, n, cfg, args.utts, args.frames, args.repeats, args.threads)
            for n in args.tasks for order in ("first", "second") for impl in ("engine", "loop")]
    context = multiprocessing.get_context("spawn")
    records = []
    for job in jobs:
        with context.Pool(1) as pool:
            records.append(pool.apply(_in_child, (job,)))
    vmap = vmap_applies(cfg)
    print(f"{'N':>3} {'order':<7} {'engine s':>9} {'loop s':>8} {'speed-up':>9} {'engine MB':>10} {'loop MB':>8}")
    for n in args.tasks:
        for order in ("first", "second"):
            e, lp = (next(r for r in records if r["tasks"] == n and r["order"] == order and r["impl"] == impl)
                     for impl in ("engine", "loop"))
            print(f"{n:>3} {order:<7} {e['seconds']:>9.2f} {lp['seconds']:>8.2f} {lp['seconds'] / e['seconds']:>8.2f}x "
                  f"{e['peak_rss_mb']:>10.0f} {lp['peak_rss_mb']:>8.0f}")
    print(f"torch.func.vmap over the looped module: {vmap}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"vmap": vmap, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
