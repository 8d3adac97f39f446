"""Results of a recipe run: CER/WER tables (method x target x budget) in Markdown and a CER-vs-minutes plot,
and the compressed models' size, speed and accuracy side by side.

Reads the `scores.json` files that `metarecipe score --tag method=... --tag target=... --tag minutes=...` wrote;
those also tagged `variant=...` (stage 8) are compressed models: the decode.json beside them gives the decoding
real-time factor, the model's compress summary (model.json beside model.pt) its size and parameters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

BASELINES = ("scratch", "multilingual")
VARIANTS = ("fp32", "pruned", "int8", "pruned_int8")


def _compressed(scores_path: Path) -> dict:
    """rtf, params (nonzero) and bytes of a compressed model's decode (decode.json beside its scores)."""
    decoded = json.loads((scores_path.parent / "decode.json").read_text(encoding="utf-8"))
    model = Path(decoded["model"])
    summary = json.loads(model.with_name(model.stem + ".json").read_text(encoding="utf-8"))
    return {"rtf": decoded["rtf"], "params": summary["nonzero_params"], "bytes": summary["bytes"]}


def collect(root, decode_set: str | None = None) -> list[dict]:
    """One row per scores.json under root: method, target, minutes, set, cer, wer, utterances, path; rows of
    compressed models also carry variant, rtf, params and bytes."""
    rows = []
    for path in sorted(Path(root).rglob("scores.json")):
        summary = json.loads(path.read_text(encoding="utf-8"))
        tags = summary.get("tags", {})
        if not {"method", "target", "minutes"} <= tags.keys():
            continue
        if decode_set is not None and tags.get("set") != decode_set:
            continue
        rows.append({"method": tags["method"], "target": tags["target"], "minutes": float(tags["minutes"]),
                     "set": tags.get("set", ""), "cer": summary["cer"]["rate"], "wer": summary["wer"]["rate"],
                     "utterances": summary["utterances"], "path": str(path)})
        if "variant" in tags:
            rows[-1].update(variant=tags["variant"], **_compressed(path))
    return rows


def _ordered(values, order=()):
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


def _minutes(value: float) -> str:
    return f"{value:g} min"


def table(rows: list[dict], metric: str, methods=()) -> str:
    """Markdown: a row per method, a column per (target, budget)."""
    targets = _ordered({r["target"] for r in rows})
    budgets = sorted({r["minutes"] for r in rows})
    cells = {(r["method"], r["target"], r["minutes"]): r[metric] for r in rows}
    columns = [(t, m) for t in targets for m in budgets if any((x, t, m) in cells for x in {r["method"] for r in rows})]
    head = "| method | " + " | ".join(f"{t} {_minutes(m)}" for t, m in columns) + " |"
    lines = [head, "| --- |" + " ---: |" * len(columns)]
    for method in _ordered({r["method"] for r in rows}, methods):
        values = [cells.get((method, t, m)) for t, m in columns]
        lines.append(f"| {method} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in values) + " |")
    return "\n".join(lines)


def comparison(rows: list[dict]) -> list[str]:
    """Per target: the best meta-learned method against multilingual at the smallest budget and against scratch
    at 5 minutes (or the largest budget below it)."""
    cer = {(r["method"], r["target"], r["minutes"]): r["cer"] for r in rows}
    lines = []
    for target in _ordered({r["target"] for r in rows}):
        budgets = sorted({m for (_, t, m) in cer if t == target})
        meta = sorted({x for (x, t, _) in cer if t == target and x not in BASELINES})
        if not budgets or not meta:
            continue
        small, five = budgets[0], max([m for m in budgets if m <= 5] or budgets[:1])
        best = min(meta, key=lambda x: cer.get((x, target, small), float("inf")))
        best_cer = cer.get((best, target, small), float("nan"))
        parts = [f"{target}: best meta-learned at {_minutes(small)} is {best} (CER {best_cer:.1f})"]
        if ("multilingual", target, small) in cer:
            parts.append(f"multilingual {cer[('multilingual', target, small)]:.1f}")
        if ("scratch", target, five) in cer:
            best5 = min(meta, key=lambda x: cer.get((x, target, five), float("inf")))
            best5_cer, scratch_cer = cer.get((best5, target, five), float("nan")), cer[("scratch", target, five)]
            parts.append(f"at {_minutes(five)} {best5} {best5_cer:.1f} vs scratch {scratch_cer:.1f} "
                         f"({100 * (1 - best5_cer / max(scratch_cer, 1e-9)):.0f}% lower)")
        lines.append("- " + "; ".join(parts))
    return lines


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def compression(rows: list[dict], methods=()) -> list[str]:
    """Markdown: per variant the means over the compressed adapted models of nonzero parameters, file size,
    decoding real-time factor (1 thread) and CER/WER, with ratios to fp32; then CER per model and variant."""
    by_model = {}
    for r in rows:
        by_model.setdefault((r["method"], r["target"], r["minutes"]), {})[r["variant"]] = r
    complete = {k: v for k, v in by_model.items() if "fp32" in v}
    variants = _ordered({r["variant"] for r in rows}, VARIANTS)
    out = [f"Means over {len(complete)} adapted models (every variant decoded with the same search on 1 CPU thread; "
           "ratios are per model, then averaged).", "",
           "| variant | nonzero params | file KiB | smaller than fp32 | decode RTF | faster than fp32 | CER % | "
           "CER - fp32 (mean / max) | WER % |", "| --- |" + " ---: |" * 8]
    for variant in variants:
        pairs = [(v[variant], v["fp32"]) for v in complete.values() if variant in v]
        if not pairs:
            continue
        delta = [r["cer"] - f["cer"] for r, f in pairs]
        out.append(f"| {variant} | {_mean(r['params'] for r, _ in pairs):,.0f} | "
                   f"{_mean(r['bytes'] for r, _ in pairs) / 1024:.0f} | "
                   f"{_mean(f['bytes'] / r['bytes'] for r, f in pairs):.2f}x | "
                   f"{_mean(r['rtf'] for r, _ in pairs):.4f} | {_mean(f['rtf'] / r['rtf'] for r, f in pairs):.2f}x | "
                   f"{_mean(r['cer'] for r, _ in pairs):.1f} | {_mean(delta):+.2f} / {max(delta):+.2f} | "
                   f"{_mean(r['wer'] for r, _ in pairs):.1f} |")
    out += ["", "CER % of every compressed model:", "", "| method | target | minutes | " + " | ".join(variants) + " |",
            "| --- | --- | ---: |" + " ---: |" * len(variants)]
    order = {m: i for i, m in enumerate(_ordered({k[0] for k in by_model}, methods))}
    for (method, target, minutes), found in sorted(by_model.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:])):
        cells = [f"{found[v]['cer']:.1f}" if v in found else "-" for v in variants]
        out.append(f"| {method} | {target} | {minutes:g} | " + " | ".join(cells) + " |")
    return out


def results_markdown(rows: list[dict], settings: dict[str, str], methods=(), title: str = "Results") -> str:
    compressed = [r for r in rows if "variant" in r]
    rows = [r for r in rows if "variant" not in r]
    decode_set = ", ".join(sorted({r["set"] for r in rows})) or "test"
    out = [f"# {title}", "", "Run settings:", ""]
    out += [f"- {key}: {value}" for key, value in settings.items()]
    out += ["", f"## CER % ({decode_set})", "", table(rows, "cer", methods), "",
            f"## WER % ({decode_set})", "", table(rows, "wer", methods), "", "## Meta-learning against the baselines",
            ""] + comparison(rows) + [""]
    if compressed:
        out += [f"## Compressed models ({decode_set})", ""] + compression(compressed, methods) + [""]
    return "\n".join(out)


def plot_cer(rows: list[dict], path, methods=()) -> None:
    """PNG: CER against adaptation minutes, one panel per target, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "variant" not in r]
    targets = _ordered({r["target"] for r in rows})
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        for method in _ordered({r["method"] for r in rows}, methods):
            points = sorted((r["minutes"], r["cer"]) for r in rows if r["target"] == target and r["method"] == method)
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=method)
        ax.set_title(target)
        ax.set_xlabel("adaptation minutes")
        ax.set_ylabel("CER %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
