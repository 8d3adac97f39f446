"""Times pyctcdecode's beam search for benchmarks/beam_search.py, inside pyctcdecode's own venv (numpy<2).

It imports neither metarecipe nor torch. Its one argument is a JSON file:

    {"log_probs": "x.npz",            # arrays arr_0, arr_1, ...: (T, V) log-probabilities, one per utterance
     "labels": ["", " ", "'", "a"],   # pyctcdecode's labels: "" the CTC blank, " " the word boundary
     "arpa": "lm.arpa" or null, "alpha": 1.0, "beta": 1.0,
     "beam_prune_logp": -25.0, "token_min_logp": -10.0, "repeats": 1,
     "runs": [{"beam": 32, "lm": true, "utterances": 50}, ...]}

and it prints JSON to stdout: {"pyctcdecode": version, "kenlm": bool, "runs": [{"beam", "lm", "utterances",
"ms_per_utterance", "texts"} or {"beam", "lm", "error"}]}. A run decodes the first `utterances` utterances one
`decoder.decode(logits, beam_width, beam_prune_logp, token_min_logp)` call each (one process, one thread),
after one warm-up call; its time is the median over `repeats` of the total, per utterance. Runs with "lm"
report an error when kenlm cannot be imported.
"""

from __future__ import annotations

import importlib.metadata
import json
import statistics
import sys
import time

import numpy as np
from pyctcdecode import build_ctcdecoder


def kenlm_available() -> bool:
    try:
        import kenlm  # noqa: F401
    except ImportError:
        return False
    return True


def decode_all(decoder, log_probs: list[np.ndarray], beam: int, config: dict) -> list[str]:
    return [decoder.decode(lp, beam_width=beam, beam_prune_logp=config["beam_prune_logp"],
                           token_min_logp=config["token_min_logp"]) for lp in log_probs]


def run(decoder, log_probs: list[np.ndarray], spec: dict, config: dict) -> dict:
    """One timed run: the texts and the median milliseconds per utterance."""
    chosen = log_probs[:spec["utterances"]]
    decode_all(decoder, chosen[:1], spec["beam"], config)
    times = []
    for _ in range(config.get("repeats", 1)):
        start = time.perf_counter()
        texts = decode_all(decoder, chosen, spec["beam"], config)
        times.append(time.perf_counter() - start)
    return {**spec, "utterances": len(chosen), "ms_per_utterance": 1e3 * statistics.median(times) / len(chosen),
            "texts": [" ".join(t.split()) for t in texts]}


def main(path: str) -> None:
    with open(path) as f:
        config = json.load(f)
    with np.load(config["log_probs"]) as arrays:
        log_probs = [arrays[f"arr_{i}"].astype(np.float32) for i in range(len(arrays.files))]
    has_kenlm = kenlm_available()
    decoders = {False: build_ctcdecoder(config["labels"])}
    if has_kenlm and config.get("arpa"):
        decoders[True] = build_ctcdecoder(config["labels"], kenlm_model_path=config["arpa"], alpha=config["alpha"],
                                          beta=config["beta"])
    results = []
    for spec in config["runs"]:
        if spec["lm"] not in decoders:
            reason = "kenlm is not importable in this venv" if not has_kenlm else "no ARPA file given"
            results.append({**spec, "error": reason})
            continue
        results.append(run(decoders[spec["lm"]], log_probs, spec, config))
    json.dump({"pyctcdecode": importlib.metadata.version("pyctcdecode"), "kenlm": has_kenlm, "runs": results},
              sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} CONFIG.json")
    main(sys.argv[1])
