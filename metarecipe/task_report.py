"""Results over many targets (speakers, accents, noise conditions): CER per method x budget as the mean over
targets and seeds with a 95% interval, the relative reduction against a reference method (the unadapted model),
and which methods beat which, with intervals.

A target's CER under a method and budget is the mean over its seeds of each decode's CER (errors pooled over its
utterances). A cell is the mean over targets of those; its interval bootstraps targets, then seeds within each
drawn target (a target is the unit a user cares about: a new speaker). The relative reduction of a method against
the reference is, per target, 1 - CER(method) / CER(reference), averaged over targets, bootstrapped the same way;
a difference between two methods is per target, paired. Intervals are 2.5 and 97.5 percentiles of RESAMPLES
resamples drawn from a generator with a fixed seed, so the same scores always give the same report.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from metarecipe.errors import InputError
from metarecipe.report import label_minutes_axes, save_png
from metarecipe.stats import RESAMPLES, SEED, Estimate

LEVEL = 0.95


class TargetScores:
    """CER per method, budget, target and seed from `metarecipe.report.collect` rows (compressed ones left out)."""

    def __init__(self, rows: list[dict], reference: str, methods=()):
        self.cer: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for row in rows:
            if "variant" not in row:
                self.cer[row["method"], row["minutes"]][row["target"]].append(row["cer"])
        found = {method for method, _ in self.cer}
        if reference not in found:
            raise InputError(f"no scores of the reference method {reference!r} (methods found: "
                             f"{', '.join(sorted(found)) or 'none'})")
        self.reference = reference
        ordered = dict.fromkeys([reference, *(m for m in methods if m in found)])  # first mentions, once
        self.methods = [*ordered, *sorted(found - ordered.keys())]
        self.budgets = sorted({minutes for method, minutes in self.cer if method != reference})
        self.targets = sorted({t for per_target in self.cer.values() for t in per_target})
        self.paired_cache: dict[tuple, tuple[Estimate, int] | None] = {}  # summary and comparison share bootstraps

    def reference_cer(self) -> dict[str, list[float]]:
        """{target: CER per seed} of the reference (its budgets pooled: the unadapted model has none)."""
        pooled = defaultdict(list)
        for (method, _), per_target in self.cer.items():
            if method == self.reference:
                for target, values in per_target.items():
                    pooled[target] += values
        return pooled

    def cell(self, method: str, minutes: float) -> dict[str, list[float]]:
        return self.reference_cer() if method == self.reference else self.cer.get((method, minutes), {})


def _resampled_means(per_target: list[np.ndarray], rng: np.random.Generator, resamples: int) -> np.ndarray:
    """(resamples,) means over targets drawn with replacement, each the mean of its seeds drawn with replacement."""
    out = np.empty(resamples)
    for r in range(resamples):
        drawn = rng.integers(len(per_target), size=len(per_target))
        out[r] = np.mean([rng.choice(per_target[t], size=len(per_target[t])).mean() for t in drawn])
    return out


def estimate(per_target: list[np.ndarray], resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """Mean over targets of each target's mean over its values (seeds), with its bootstrap interval."""
    value = float(np.mean([v.mean() for v in per_target]))
    if len(per_target) < 2 and all(len(v) < 2 for v in per_target):
        return Estimate(value, float("nan"), float("nan"))
    samples = _resampled_means(per_target, np.random.default_rng(seed), resamples)
    low, high = np.percentile(samples, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return Estimate(value, float(low), float(high))


def mean_cer(scores: TargetScores, method: str, minutes: float, resamples: int = RESAMPLES) -> Estimate | None:
    cell = scores.cell(method, minutes)
    return estimate([np.array(v) for v in cell.values()], resamples) if cell else None


def paired(scores: TargetScores, method: str, other: str, minutes: float, relative: bool,
           resamples: int = RESAMPLES) -> tuple[Estimate, int] | None:
    """Per target: CER(method) - CER(other) in points, or 100 x (1 - CER(method) / CER(other)) with relative;
    the seeds of `method` paired with the mean of `other`'s. (estimate, targets) over the targets both have."""
    key = (method, other, minutes, relative, resamples)
    if key not in scores.paired_cache:
        scores.paired_cache[key] = _paired(scores, method, other, minutes, relative, resamples)
    return scores.paired_cache[key]


def _paired(scores: TargetScores, method: str, other: str, minutes: float, relative: bool,
            resamples: int) -> tuple[Estimate, int] | None:
    mine, theirs = scores.cell(method, minutes), scores.cell(other, minutes)
    common = sorted(mine.keys() & theirs.keys())
    if not common:
        return None
    bases = [float(np.mean(theirs[t])) for t in common]
    if relative and min(bases) == 0:
        return None
    values = [100 * (1 - np.array(mine[t]) / base) if relative else np.array(mine[t]) - base
              for t, base in zip(common, bases, strict=True)]
    return estimate(values, resamples), len(common)


def _ci(e: Estimate, digits: int = 1) -> str:
    if np.isnan(e.low):
        return f"{e.value:.{digits}f}"
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def cer_table(scores: TargetScores, resamples: int = RESAMPLES) -> list[str]:
    head = "| method | " + " | ".join(f"{m:g} min" for m in scores.budgets) + " |"
    out = [head, "| --- |" + " ---: |" * len(scores.budgets)]
    for method in scores.methods:
        cells = [_cell(scores, method, m, resamples) for m in scores.budgets]
        name = f"{method} (reference)" if method == scores.reference else method
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def _cell(scores: TargetScores, method: str, minutes: float, resamples: int) -> str:
    """The mean CER [CI], with how many targets it covers where that is not every target of the run."""
    found = mean_cer(scores, method, minutes, resamples)
    if found is None:
        return "-"
    covered = len(scores.cell(method, minutes))
    return _ci(found) + ("" if covered == len(scores.targets) else f" ({covered} of {len(scores.targets)} targets)")


def reduction_table(scores: TargetScores, resamples: int = RESAMPLES) -> list[str]:
    out = ["| method | " + " | ".join(f"{m:g} min" for m in scores.budgets) + " |",
           "| --- |" + " ---: |" * len(scores.budgets)]
    for method in scores.methods[1:]:
        cells = [paired(scores, method, scores.reference, m, True, resamples) for m in scores.budgets]
        out.append(f"| {method} | " + " | ".join("-" if c is None else _ci(c[0]) for c in cells) + " |")
    return out


def per_target_table(scores: TargetScores) -> list[str]:
    """CER per target and method (rows) and budget (columns), the mean over the target's seeds."""
    out = ["| target | method | " + " | ".join(f"{m:g} min" for m in scores.budgets) + " |",
           "| --- | --- |" + " ---: |" * len(scores.budgets)]
    for target in scores.targets:
        for method in scores.methods:
            values = [scores.cell(method, m).get(target) for m in scores.budgets]
            if any(values):
                out.append(f"| {target} | {method} | " + " | ".join("-" if not v else f"{np.mean(v):.1f}"
                                                                   for v in values) + " |")
    return out


def _verdict(e: Estimate) -> str:
    if np.isnan(e.low):
        return "no interval (one target, one seed)"
    if e.high < 0:
        return "lower, significantly"
    if e.low > 0:
        return "higher, significantly"
    return "not significantly different"


def comparison(scores: TargetScores, baselines: list[str], resamples: int = RESAMPLES) -> list[str]:
    """Per budget: the best method (the largest mean relative reduction against the reference), that reduction,
    and each method's difference against every baseline (CER points, paired by target, 95% interval)."""
    out = []
    for minutes in scores.budgets:
        found = {m: mean_cer(scores, m, minutes, resamples) for m in scores.methods[1:]}
        found = {m: e for m, e in found.items() if e is not None}
        reductions = {m: paired(scores, m, scores.reference, minutes, True, resamples) for m in found}
        reductions = {m: r for m, r in reductions.items() if r is not None}
        if not reductions:
            continue
        best = max(reductions, key=lambda m: reductions[m][0].value)  # paired per target: fair on any coverage
        reduction, targets = reductions[best]
        difference = paired(scores, best, scores.reference, minutes, False, resamples)[0]
        out.append(f"- {minutes:g} min: best {best} (CER {_ci(found[best])}): {_ci(reduction)}% relative "
                   f"reduction against {scores.reference} over {targets} target{'s' * (targets != 1)} (CER "
                   f"{_verdict(difference)})")
        for method in found:
            for baseline in baselines:
                if baseline == method or (baseline not in found and baseline != scores.reference):
                    continue
                diff = paired(scores, method, baseline, minutes, False, resamples)
                if diff is not None:
                    out.append(f"  - {method} - {baseline}: {_ci(diff[0])} CER points: {_verdict(diff[0])}")
    return out or ["- no adapted results"]


SUMMARY_PHRASES = {"lower, significantly": "CER significantly lower",
                   "higher, significantly": "CER significantly higher",
                   "not significantly different": "CER not significantly different"}  # _verdict's, in a summary


def summary(scores: TargetScores, baselines: list[str], resamples: int = RESAMPLES) -> list[str]:
    """Per method other than the reference and the baselines (the meta-learners): against each of those, the
    budgets where its CER is significantly lower (with the paired difference), higher, or not different."""
    out = []
    for method in [m for m in scores.methods[1:] if m not in baselines]:
        for other in [scores.reference, *(b for b in baselines if b in scores.methods)]:
            verdicts = defaultdict(list)
            for minutes in scores.budgets:
                diff = paired(scores, method, other, minutes, False, resamples)
                if diff is not None:
                    verdict = _verdict(diff[0])
                    significant = verdict.endswith(", significantly")
                    verdicts[SUMMARY_PHRASES.get(verdict, verdict)].append(
                        f"{minutes:g} min" + (f" ({_ci(diff[0])} points)" * significant))
            parts = [f"{verdict} at {', '.join(where)}" for verdict, where in verdicts.items()]
            if parts:
                out.append(f"- {method} against {other}: " + "; ".join(parts))
    return out


def task_results_markdown(rows: list[dict], reference: str, baselines: list[str], settings: dict[str, str],
                          methods=(), title: str = "Results", note: str = "",
                          resamples: int = RESAMPLES) -> str:
    scores = TargetScores(rows, reference, methods)
    out = [f"# {title}", "", "Run settings:", ""] + [f"- {k}: {v}" for k, v in settings.items()]
    out += ["", f"Targets ({len(scores.targets)}): {', '.join(scores.targets)}", ""]
    if note:
        out += [note, ""]
    found = summary(scores, baselines, resamples)
    if found:
        out += ["## Summary: paired CER differences, 95% CI over targets and seeds", ""] + found + [""]
    out += ["## CER % on the unseen targets: mean over targets and seeds [95% CI]", ""] + cer_table(scores, resamples)
    out += ["", f"## Relative CER reduction % against {reference}: mean over targets [95% CI]", ""]
    out += reduction_table(scores, resamples)
    out += ["", "## Who beats whom", ""] + comparison(scores, [reference, *baselines], resamples)
    out += ["", "## CER % per target: mean over seeds", ""] + per_target_table(scores) + [""]
    return "\n".join(out)


def plot_task_cer(rows: list[dict], reference: str, path, methods=(), resamples: int = RESAMPLES) -> None:
    """PNG: mean CER over targets against adaptation minutes, 95% CI bars, the reference as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = TargetScores(rows, reference, methods)
    fig, ax = plt.subplots(figsize=(6, 4))
    ref = mean_cer(scores, reference, 0.0, resamples)
    ax.axhline(ref.value, color="gray", linestyle="--", label=f"{reference}")
    if not np.isnan(ref.low):
        ax.axhspan(ref.low, ref.high, color="gray", alpha=0.15)
    for method in scores.methods[1:]:
        budgets = [m for m in scores.budgets if scores.cell(method, m)]
        found = [mean_cer(scores, method, m, resamples) for m in budgets]
        if not found:
            continue
        values = np.array([e.value for e in found])
        spread = np.nan_to_num(np.array([[e.value - e.low for e in found], [e.high - e.value for e in found]]))
        ax.errorbar(budgets, values, yerr=np.maximum(spread, 0), marker="o", capsize=3, label=method)
    label_minutes_axes(ax, "CER % (mean over targets, 95% CI)")
    save_png(fig, path)
