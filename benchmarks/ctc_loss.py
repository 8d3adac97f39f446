"""CTC loss: metarecipe's backends beside torch.nn.functional.ctc_loss, measured in one run.

For each size (B, T, U, V) and thread count it reports median milliseconds of the forward and of
forward+backward (loss.backward() into log_probs), the speed-up of forward+backward over torch, the double
backward (the backward of the gradient, i.e. a Hessian-vector product: autograd.grad(grad, log_probs, w) on a
gradient taken with create_graph=True) and its cost relative to forward+backward, and a whole second-order step
(forward, gradient with create_graph=True, double backward). torch's own CTC loss has no double backward
(pytorch issue 70108), so those columns are ours alone.

    python benchmarks/ctc_loss.py                 # table
    python benchmarks/ctc_loss.py --json out.json # and the records as JSON
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from metarecipe.kernels import available_backends, ctc_loss

# (B, T, U, V, variable lengths)
SIZES = [
    (16, 150, 40, 28, False),
    (64, 150, 40, 28, False),
    (16, 150, 20, 5000, False),
    (16, 500, 100, 32, True),
    (4, 2000, 600, 32, False),
]


def make_inputs(batch, frames, labels, vocab, variable, seed=0):
    """log_probs (T, B, V) leaf, targets (B, U), lengths; variable lengths span [1/2, 1] of the maximum."""
    gen = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(frames, batch, vocab, generator=gen).log_softmax(-1).requires_grad_()
    targets = torch.randint(1, vocab, (batch, labels), generator=gen)
    if variable:
        input_lengths = torch.randint(frames // 2, frames + 1, (batch,), generator=gen)
        target_lengths = torch.randint(labels // 2, labels + 1, (batch,), generator=gen)
    else:
        input_lengths = torch.full((batch,), frames)
        target_lengths = torch.full((batch,), labels)
    return log_probs, targets, input_lengths, target_lengths


def median_ms(fn, repeats):
    fn()  # warm-up (and JIT compilation for numba)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(loss_fn, inputs, repeats, second_order):
    """Median ms of forward, forward+backward and (optionally) the double backward of one loss function."""
    log_probs = inputs[0]
    weights = torch.randn_like(log_probs)

    def forward():
        with torch.no_grad():
            loss_fn(*inputs)

    def forward_backward():
        log_probs.grad = None
        loss_fn(*inputs).backward()

    def second_order_step():
        (grad,) = torch.autograd.grad(loss_fn(*inputs), log_probs, create_graph=True)
        torch.autograd.grad(grad, log_probs, weights)

    row = {"forward_ms": median_ms(forward, repeats), "fwd_bwd_ms": median_ms(forward_backward, repeats)}
    if second_order:
        (grad,) = torch.autograd.grad(loss_fn(*inputs), log_probs, create_graph=True)
        row["double_bwd_ms"] = median_ms(lambda: torch.autograd.grad(grad, log_probs, weights, retain_graph=True),
                                         repeats)
        row["double_over_fwd_bwd"] = row["double_bwd_ms"] / row["fwd_bwd_ms"]
        row["second_order_step_ms"] = median_ms(second_order_step, repeats)
    return row


def run(backends, threads_list, repeats, sizes, device="cpu"):
    records = []
    for batch, frames, labels, vocab, variable in sizes:
        inputs = make_inputs(batch, frames, labels, vocab, variable)
        inputs = (inputs[0].detach().to(device).requires_grad_(), inputs[1].to(device), *inputs[2:])
        for threads in threads_list:
            torch.set_num_threads(threads)
            size = {"B": batch, "T": frames, "U": labels, "V": vocab, "variable_lengths": variable, "threads": threads,
                    "device": device}
            peer = measure(lambda *a: F.ctc_loss(*a, reduction="sum"), inputs, repeats, second_order=False)
            records.append({**size, "impl": "torch.nn.functional", **peer})
            for name in backends:
                reference = name == "torch"  # Python loop over frames: fewer repeats, no second order past T=500
                reps = max(1, repeats // 3) if reference else repeats
                second_order = not (reference and frames > 500)
                ours = measure(lambda *a, n=name: ctc_loss(*a, reduction="sum", backend=n), inputs, reps,
                               second_order)
                ours["speedup_fwd_bwd"] = peer["fwd_bwd_ms"] / ours["fwd_bwd_ms"]
                records.append({**size, "impl": name, **ours})
            print(f"done B={batch} T={frames} U={labels} V={vocab} threads={threads}", file=sys.stderr, flush=True)
    return records


def print_table(records):
    header = (f"{'B':>3} {'T':>5} {'U':>4} {'V':>5} {'thr':>3}  {'impl':<20} {'fwd ms':>9} {'fwd+bwd ms':>11} "
              f"{'x torch':>8} {'dbl-bwd ms':>11} {'dbl/f+b':>8} {'2nd-order step ms':>18}")
    print(header)
    print("-" * len(header))
    for r in records:
        speed = f"{r['speedup_fwd_bwd']:.2f}" if "speedup_fwd_bwd" in r else "1.00"
        double = f"{r['double_bwd_ms']:.2f}" if "double_bwd_ms" in r else "n/a"
        ratio = f"{r['double_over_fwd_bwd']:.2f}" if "double_over_fwd_bwd" in r else "n/a"
        step = f"{r['second_order_step_ms']:.2f}" if "second_order_step_ms" in r else "n/a"
        var = "*" if r["variable_lengths"] else " "
        print(f"{r['B']:>3} {r['T']:>5} {r['U']:>4} {r['V']:>5}{var}{r['threads']:>3}  {r['impl']:<20} "
              f"{r['forward_ms']:>9.2f} {r['fwd_bwd_ms']:>11.2f} {speed:>8} {double:>11} {ratio:>8} {step:>18}")
    print("* variable lengths; x torch: forward+backward speed-up over torch.nn.functional.ctc_loss (median)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the CUDA backend beside cuDNN/torch")
    parser.add_argument("--backends", nargs="+",
                        help="backends to measure (default: every backend of this install for --device)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="only the two smallest sizes")
    parser.add_argument("--json", metavar="PATH", help="also write the records as JSON")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    backends = args.backends or [b for b in available_backends() if (b == "cuda") == (args.device == "cuda")]
    records = run(backends, args.threads, args.repeats, SIZES[:2] if args.quick else SIZES, args.device)
    print_table(records)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
