"""Seconds per meta-step and peak memory: the task-batched engine beside a loop over tasks and torch.func.vmap.

The loop is how learn2learn and higher do it: an ordinary nn.Module (nn.GRU, nn.TransformerEncoderLayer), one
task at a time, the inner step applied to a clone of the parameters through torch.func.functional_call,
create_graph for second order. vmap batches that same module over stacked per-task parameters where it can: the
Transformer (with the math attention kernel, the only twice-differentiable one on the CPU); for nn.GRU it has no
batching rule (pytorch issues 134606, 105982), which the table reports. Each measurement runs in a fresh process
so that its peak resident memory is its own.

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
from torch.nn.attention import SDPBackend, sdpa_kernel

from metarecipe.kernels import ctc_loss
from metarecipe.meta import InnerLoop, MetaBatch, TaskSet, make_algorithm
from metarecipe.models import BatchedCTCModel, ModelConfig
from metarecipe.models.encoders import sinusoidal_positions


class LoopModel(nn.Module):
    """The same architecture as BatchedCTCModel as an ordinary module, one task at a time."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv2d(1, cfg.conv_channels, 3, 2)
        self.conv2 = nn.Conv2d(cfg.conv_channels, cfg.conv_channels, 3, 2)
        freq = ((cfg.num_mel_bins - 3) // 2 + 1 - 3) // 2 + 1
        self.proj = nn.Linear(cfg.conv_channels * freq, cfg.d_model)
        if cfg.encoder == "gru":
            self.grus = nn.ModuleList()
            self.norms = nn.ModuleList()
            size = cfg.d_model
            for _ in range(cfg.gru_layers):
                self.grus.append(nn.GRU(size, cfg.gru_hidden, batch_first=True, bidirectional=True))
                self.norms.append(nn.LayerNorm(2 * cfg.gru_hidden))
                size = 2 * cfg.gru_hidden
        else:
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(cfg.d_model, cfg.attention_heads, cfg.feedforward_dim, dropout=0.0,
                                           batch_first=True, norm_first=True) for _ in range(cfg.transformer_layers))
            self.final_norm = nn.LayerNorm(cfg.d_model)
            size = cfg.d_model
        self.head = nn.Linear(size, cfg.vocab_size)

    def forward(self, feats, lengths):
        x = torch.relu(self.conv2(torch.relu(self.conv1(feats.unsqueeze(1)))))
        b, c, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        out_lengths = torch.div(torch.div(lengths - 3, 2, rounding_mode="floor") - 2, 2, rounding_mode="floor") + 1
        if self.cfg.encoder == "gru":
            for gru, norm in zip(self.grus, self.norms, strict=True):
                packed = nn.utils.rnn.pack_padded_sequence(x, out_lengths, batch_first=True, enforce_sorted=False)
                x, _ = nn.utils.rnn.pad_packed_sequence(gru(packed)[0], batch_first=True, total_length=t)
                x = norm(x)
        else:
            x = x + sinusoidal_positions(t, x.shape[-1], x)
            padding = torch.arange(t) >= out_lengths.unsqueeze(-1)
            for layer in self.layers:
                x = layer(x, src_key_padding_mask=padding)
            x = self.final_norm(x)
        return self.head(x).log_softmax(-1), out_lengths


def task_loss(log_probs, lengths, tasks: TaskSet) -> torch.Tensor:
    """Mean CTC loss of each task (N,) from (N, B, T, V) log-probabilities."""
    n, b, t, v = log_probs.shape
    losses = ctc_loss(log_probs.reshape(n * b, t, v).transpose(0, 1), tasks.targets.reshape(n * b, -1),
                      lengths.reshape(-1), tasks.target_lengths.reshape(-1), reduction="none", zero_infinity=True)
    return (losses / tasks.target_lengths.reshape(-1).clamp(min=1)).reshape(n, b).mean(dim=1)


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
        total += float(query.detach())
    return total


def vmap_meta_step(model: LoopModel, batch: MetaBatch, lr: float, second_order: bool) -> float:
    """MAML/FOMAML with the module vmapped over per-task parameters (N, ...); the CTC loss outside vmap."""
    n = batch.support.num_tasks
    shared = dict(model.named_parameters())
    stacked = {k: p.unsqueeze(0).expand(n, *p.shape) for k, p in shared.items()}

    def losses(params, tasks):
        run = torch.func.vmap(lambda p, f, ln: torch.func.functional_call(model, p, (f, ln)))
        return task_loss(*run(params, tasks.feats, tasks.lengths), tasks)

    grads = torch.autograd.grad(losses(stacked, batch.support).sum(), list(stacked.values()),
                                create_graph=second_order)
    adapted = {k: p - lr * (g if second_order else g.detach())
               for (k, p), g in zip(stacked.items(), grads, strict=True)}
    query = losses(adapted, batch.query).mean()
    query.backward()
    return float(query.detach())


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
        run = loop_meta_step if impl == "loop" else vmap_meta_step

        def step():
            model.zero_grad()
            with sdpa_kernel(SDPBackend.MATH):  # the twice-differentiable attention kernel
                run(model, batch, 0.1, second)
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"encoder": cfg.encoder, "impl": impl, "order": order, "tasks": tasks,
            "seconds": statistics.median(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _in_child(args):
    return measure(*args)


def vmap_applies(cfg: ModelConfig) -> str:
    """Whether torch.func.vmap batches the looped module over stacked parameters ("runs", or why not)."""
    model = LoopModel(cfg)
    stacked = {n: p.detach().unsqueeze(0).repeat(2, *[1] * p.dim()) for n, p in model.named_parameters()}
    feats, lengths = torch.randn(2, 1, 60, cfg.num_mel_bins), torch.full((2, 1), 60)
    try:
        torch.func.vmap(lambda p, f, n: torch.func.functional_call(model, p, (f, n))[0])(stacked, feats, lengths)
    except Exception as err:  # the reason is the report
        return f"n/a ({type(err).__name__}: {str(err).splitlines()[0][:60]})"
    return "runs"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", type=int, default=[4, 8, 16])
    parser.add_argument("--encoders", nargs="+", default=["gru", "transformer"], choices=["gru", "transformer"])
    parser.add_argument("--utts", type=int, default=2, help="utterances per support and query set")
    parser.add_argument("--frames", type=int, default=200, help="frames per utterance (10 ms each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    records, vmap = [], {}
    for encoder in args.encoders:
        cfg = ModelConfig(vocab_size=64, encoder=encoder)
        vmap[encoder] = vmap_applies(cfg)
        impls = ("engine", "loop", "vmap") if vmap[encoder] == "runs" else ("engine", "loop")
        for n in args.tasks:
            for order in ("first", "second"):
                for impl in impls:
                    with context.Pool(1) as pool:
                        records.append(pool.apply(_in_child, ((impl, order, n, cfg, args.utts, args.frames,
                                                               args.repeats, args.threads),)))
    print(f"{'encoder':<12} {'N':>3} {'order':<7} {'engine s':>9} {'loop s':>8} {'vmap s':>8} {'vs loop':>8} "
          f"{'vs vmap':>8} {'engine MB':>10} {'loop MB':>8} {'vmap MB':>8}")
    for encoder in args.encoders:
        for n in args.tasks:
            for order in ("first", "second"):
                row = {r["impl"]: r for r in records if (r["encoder"], r["tasks"], r["order"]) == (encoder, n, order)}
                e, lp, vm = row["engine"], row["loop"], row.get("vmap")
                vm_s = f"{vm['seconds']:>8.2f}" if vm else f"{'n/a':>8}"
                vm_x = f"{vm['seconds'] / e['seconds']:>7.2f}x" if vm else f"{'n/a':>8}"
                vm_mb = f"{vm['peak_rss_mb']:>8.0f}" if vm else f"{'n/a':>8}"
                print(f"{encoder:<12} {n:>3} {order:<7} {e['seconds']:>9.2f} {lp['seconds']:>8.2f} {vm_s} "
                      f"{lp['seconds'] / e['seconds']:>7.2f}x {vm_x} {e['peak_rss_mb']:>10.0f} "
                      f"{lp['peak_rss_mb']:>8.0f} {vm_mb}")
    for encoder, verdict in vmap.items():
        print(f"torch.func.vmap over the {encoder} module: {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"vmap": vmap, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
