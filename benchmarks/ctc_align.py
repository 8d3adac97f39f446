"""CTC forced alignment: metarecipe's backends beside a peer, measured in one run.

The peer is torchaudio.functional.forced_align where torchaudio imports (one utterance per call, so it is
called in a loop over the batch), else metarecipe's own plain-torch reference (backend "torch"). For each size
(B, T, U, V) and thread count it reports the median milliseconds of one batched alignment and the speed-up
over the peer.

    python benchmarks/ctc_align.py                 # table
    python benchmarks/ctc_align.py --json out.json # and the records as JSON
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import warnings

import torch
from ctc_loss import SIZES, median_ms  # the sizes and timing of the CTC loss benchmark (benchmarks/ on sys.path)

from metarecipe.kernels import available_backends
from metarecipe.kernels.ctc_align import ctc_forced_align


def torchaudio_peer():
    """(name, align function) of torchaudio's forced_align, or None where torchaudio does not import."""
    try:
        from torchaudio.functional import forced_align
    except ImportError:
        return None

    def align(log_probs, lengths, targets, target_lengths):
        for b in range(log_probs.shape[0]):
            frames, labels = int(lengths[b]), int(target_lengths[b])
            forced_align(log_probs[b : b + 1, :frames], targets[b : b + 1, :labels].int(), blank=0)

    return "torchaudio", align


def make_inputs(batch, frames, labels, vocab, variable, seed=0):
    """log_probs (B, T, V), targets (B, U) without repeats (every size stays feasible), lengths; variable
    lengths span [1/2, 1] of the maximum."""
    gen = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(batch, frames, vocab, generator=gen).log_softmax(-1)
    steps = torch.randint(1, vocab - 1, (batch, labels), generator=gen)
    targets = (steps.cumsum(1) % (vocab - 1)) + 1  # neighbours differ
    if variable:
        lengths = torch.randint(frames // 2, frames + 1, (batch,), generator=gen)
        target_lengths = torch.minimum(torch.randint(labels // 2, labels + 1, (batch,), generator=gen), lengths)
    else:
        lengths, target_lengths = torch.full((batch,), frames), torch.full((batch,), labels)
    return log_probs, lengths, targets, target_lengths


def reference(*inputs):
    return ctc_forced_align(*inputs, backend="torch")


def set_threads(threads):
    """torch's intra-op threads (the cpp backend's) and numba's."""
    torch.set_num_threads(threads)
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def run(backends, threads_list, repeats, sizes):
    peer_name, peer = torchaudio_peer() or ("torch", reference)
    peer_repeats = max(1, repeats // 3) if peer is reference else repeats  # the reference loops in Python
    records = []
    for batch, frames, labels, vocab, variable in sizes:
        inputs = make_inputs(batch, frames, labels, vocab, variable)
        for threads in threads_list:
            set_threads(threads)
            size = {"B": batch, "T": frames, "U": labels, "V": vocab, "variable_lengths": variable,
                    "threads": threads}
            peer_ms = median_ms(functools.partial(peer, *inputs), peer_repeats)
            records.append({**size, "impl": peer_name, "ms": peer_ms, "speedup": 1.0})
            for name in backends:
                ms = median_ms(functools.partial(ctc_forced_align, *inputs, backend=name), repeats)
                records.append({**size, "impl": name, "ms": ms, "speedup": peer_ms / ms})
            print(f"done B={batch} T={frames} U={labels} V={vocab} threads={threads}", file=sys.stderr, flush=True)
    return peer_name, records


def print_table(peer_name, records):
    header = f"{'B':>3} {'T':>5} {'U':>4} {'V':>5} {'thr':>3}  {'impl':<11} {'ms':>9} {'x ' + peer_name:>13}"
    print(header)
    print("-" * len(header))
    for r in records:
        var = "*" if r["variable_lengths"] else " "
        print(f"{r['B']:>3} {r['T']:>5} {r['U']:>4} {r['V']:>5}{var}{r['threads']:>3}  {r['impl']:<11} "
              f"{r['ms']:>9.2f} {r['speedup']:>13.1f}")
    print(f"* variable lengths; x {peer_name}: speed-up over {peer_name} (median)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", help="backends to measure (default: cpp and numba where built)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="only the two smallest sizes")
    parser.add_argument("--json", metavar="PATH", help="also write the records as JSON")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    backends = args.backends or [b for b in available_backends() if b in ("cpp", "numba")]
    peer_name, records = run(backends, args.threads, args.repeats, SIZES[:2] if args.quick else SIZES)
    print_table(peer_name, records)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "peer": peer_name, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
