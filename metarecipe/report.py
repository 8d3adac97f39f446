"""Results of a recipe run: CER/WER tables (method x target x budget) with 95% confidence intervals, the
significant differences, adaptation problems, training compute, a CER-vs-minutes plot with error bars, and the
compressed models' size, speed and accuracy side by side.

Reads the `scores.json` files that `metarecipe score --tag method=... --tag target=... --tag minutes=...
[--tag seed=...]` wrote and the per-utterance scores beside them (per_utt_cer, per_utt_wer): a cell pools the
decodes of its seeds (one seed when untagged), its interval bootstraps seeds and utterances (metarecipe.stats).
The adaptation record `adapt.json` of a decode's adaptation dir (../adapt.json), when there is one, tells whether
the run diverged or kept its initial model. Scores also tagged `variant=...` (stage 8) are compressed models:
the decode.json beside them gives the decoding real-time factor, the model's compress summary (model.json beside
model.pt) its size and parameters. Training compute comes from meta-training dirs (config.yaml, metrics.jsonl).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarecipe.config import read_yaml
from metarecipe.errors import InputError
from metarecipe.io.atomic import atomic_path
from metarecipe.stats import RESAMPLES, Counts, Estimate, difference_interval, rate_interval

BASELINES = ("scratch", "multilingual")
VARIANTS = ("fp32", "pruned", "int8", "pruned_int8")
METRICS = {"cer": "CER", "wer": "WER"}
DIVERGED, KEPT_INITIAL = "†", "‡"
TIME_KEY = "train_seconds"  # metrics.jsonl: seconds of meta-training up to a step's record


def _json(path: Path, what: str):
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise InputError(f"{path}: {err.strerror} ({what})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a JSON file ({err})") from None


def _compressed(scores_path: Path) -> dict:
    """rtf, params (nonzero) and bytes of a compressed model's decode (decode.json beside its scores)."""
    decoded = _json(scores_path.parent / "decode.json", "the decoding record of a compressed model")
    model = Path(decoded["model"])
    summary = _json(model.with_name(model.stem + ".json"), "the summary of a compressed model")
    return {"rtf": decoded["rtf"], "params": summary["nonzero_params"], "bytes": summary["bytes"]}


def utterance_counts(path: Path) -> dict[str, tuple[int, int]]:
    """{utt: (errors, reference length)} from the `utt #csid C S I D` lines of a per_utt_* file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise InputError(f"{path}: {err.strerror} (the per-utterance scores that `metarecipe score --out-dir` "
                         "writes are needed for the confidence intervals)") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 ({err.reason})") from None
    counts = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if len(fields) < 2 or fields[1] != "#csid":
            continue
        if len(fields) != 6 or not all(f.isdigit() for f in fields[2:]):
            raise InputError(f"{path}:{number}: want `utt #csid C S I D` with four counts")
        correct, sub, ins, dels = map(int, fields[2:])
        counts[fields[0]] = (sub + ins + dels, correct + sub + dels)
    return counts


def _checked_counts(scores_path: Path, summary: dict, metric: str) -> dict[str, tuple[int, int]]:
    """The per-utterance counts of a metric, which must add up to scores.json's totals."""
    path = scores_path.with_name(f"per_utt_{metric}")
    counts = utterance_counts(path)
    errors, length = (sum(c[k] for c in counts.values()) for k in (0, 1))
    total = summary.get(metric, {})
    if (errors, length) != (total.get("errors"), total.get("ref_len")):
        raise InputError(f"{path}: {errors} errors in {length} tokens, but {scores_path} says "
                         f"{total.get('errors')} in {total.get('ref_len')}; score again")
    if length == 0:
        raise InputError(f"{path}: the references have no tokens to score")
    return counts


def adaptation_record(scores_path: Path) -> dict | None:
    """The adapt.json of the adaptation dir a decode dir lies in, or None when there is none (older runs)."""
    path = scores_path.parent.parent / "adapt.json"
    if not path.exists():
        return None
    record = _json(path, "the adaptation record")
    if not isinstance(record, dict):
        raise InputError(f"{path}: want a JSON object")
    return record


def _row(path: Path, summary: dict, tags: dict) -> dict:
    try:
        minutes = float(tags["minutes"])
    except (TypeError, ValueError):
        raise InputError(f"{path}: tag minutes={tags['minutes']!r} is not a number") from None
    try:
        cer, wer = summary["cer"]["rate"], summary["wer"]["rate"]
    except (KeyError, TypeError):
        raise InputError(f"{path}: no cer and wer rates; was it written by `metarecipe score`?") from None
    return {"method": tags["method"], "target": tags["target"], "minutes": minutes, "set": tags.get("set", ""),
            "seed": tags.get("seed"), "cer": cer, "wer": wer, "utterances": summary.get("utterances"),
            "path": str(path)}


def collect(root, decode_set: str | None = None) -> list[dict]:
    """One row per scores.json under root: method, target, minutes, set, seed (None when untagged), cer, wer,
    utterances, path; rows of adapted models also carry counts ({metric: {utt: (errors, length)}}) and adapt
    (adapt.json or None), rows of compressed models variant, rtf, params and bytes. InputError for unreadable
    scores, two scores of one seed, an untagged run beside seeded ones, or scores of several decode sets."""
    rows, seen = [], {}
    for path in sorted(Path(root).rglob("scores.json")):
        summary = _json(path, "scores")
        tags = summary.get("tags", {}) if isinstance(summary, dict) else {}
        if not {"method", "target", "minutes"} <= tags.keys():
            continue
        if decode_set is not None and tags.get("set") != decode_set:
            continue
        row = _row(path, summary, tags)
        key = tuple(row[k] for k in ("method", "target", "minutes", "set", "seed")) + (tags.get("variant"),)
        if key in seen:
            raise InputError(f"{path}: the same method, target, minutes, set and seed as {seen[key]}; "
                             "move one of them out of the way")
        seen[key] = path
        if "variant" in tags:
            row.update(variant=tags["variant"], **_compressed(path))
        else:
            row.update(counts={m: _checked_counts(path, summary, m) for m in METRICS},
                       adapt=adaptation_record(path))
        rows.append(row)
    _check_seed_tags(rows)
    sets = sorted({r["set"] for r in rows})
    if len(sets) > 1:
        raise InputError(f"{root}: scores of several decode sets ({', '.join(sets)}); choose one with --set")
    return rows


def _check_seed_tags(rows: list[dict]) -> None:
    """InputError when a cell mixes a run without a seed tag (an older layout, left behind) with seeded runs."""
    tagged = {(r["method"], r["target"], r["minutes"], r.get("variant")) for r in rows if r["seed"] is not None}
    stale = next((r for r in rows if r["seed"] is None and
                  (r["method"], r["target"], r["minutes"], r.get("variant")) in tagged), None)
    if stale:
        raise InputError(f"{stale['path']}: no seed tag, but other runs of {stale['method']} {stale['target']} "
                         f"{_minutes(stale['minutes'])} have one (a run of an older layout?); move it out of the way")


def _ordered(values, order=()):
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


def _minutes(value: float) -> str:
    return f"{value:g} min"


def _seed_order(seed: str | None):
    return (0, int(seed), "") if seed is not None and seed.isdigit() else (1, 0, seed or "")


def _seed_name(seed: str | None) -> str:
    return "the run" if seed is None else f"seed {seed}"


def diverged(record: dict | None) -> bool:
    return bool(record) and (bool(record.get("diverged")) or record.get("stopped") == "diverged")


def kept_initial(record: dict | None) -> bool:
    return bool(record) and bool(record.get("kept_initial"))


@dataclass
class Cell:
    """The runs (one per seed, ordered by seed) of a method on a target with a budget."""
    method: str
    target: str
    minutes: float
    runs: list[dict]

    @property
    def seeds(self) -> list:
        return [r["seed"] for r in self.runs]

    def utterances(self, metric: str) -> set[str]:
        return {utt for r in self.runs for utt in r["counts"][metric]}

    def counts(self, metric: str, utterances: list[str]) -> Counts:
        """Errors and lengths of every seed on the given utterances (0 and 0 where a seed has no score)."""
        index = {utt: k for k, utt in enumerate(utterances)}
        errors, lengths = np.zeros((2, len(self.runs), len(utterances)))
        for s, run in enumerate(self.runs):
            for utt, (e, n) in run["counts"][metric].items():
                errors[s, index[utt]], lengths[s, index[utt]] = e, n
        return Counts(errors, lengths)

    def problems(self, test) -> list:
        """The seeds whose adaptation record passes test (diverged, kept_initial)."""
        return [r["seed"] for r in self.runs if test(r["adapt"])]


class Results:
    """The cells of a run's adapted models with their intervals, and paired differences between cells."""

    def __init__(self, rows: list[dict], methods=(), resamples: int = RESAMPLES):
        grouped: dict[tuple, list[dict]] = {}
        for r in rows:
            grouped.setdefault((r["method"], r["target"], r["minutes"]), []).append(r)
        self.cells = {key: Cell(*key, sorted(runs, key=lambda r: _seed_order(r["seed"])))
                      for key, runs in grouped.items()}
        self.methods = _ordered({k[0] for k in self.cells}, methods)
        self.targets = _ordered({k[1] for k in self.cells})
        self.columns = [(t, m) for t in self.targets for m in sorted({k[2] for k in self.cells if k[1] == t})]
        self.resamples = resamples
        self._estimates: dict = {}
        self._differences: dict = {}

    def cell(self, method: str, target: str, minutes: float) -> Cell | None:
        return self.cells.get((method, target, minutes))

    def column(self, target: str, minutes: float, among=None) -> list[str]:
        """The methods with a cell in the column, in row order (only those `among` when given)."""
        return [m for m in self.methods if (m, target, minutes) in self.cells and (among is None or m in among)]

    def estimate(self, metric: str, method: str, target: str, minutes: float) -> Estimate:
        key = (metric, method, target, minutes)
        if key not in self._estimates:
            cell = self.cells[key[1:]]
            self._estimates[key] = rate_interval(cell.counts(metric, sorted(cell.utterances(metric))),
                                                 self.resamples)
        return self._estimates[key]

    def difference(self, metric: str, a: str, b: str, target: str, minutes: float) -> Estimate:
        """Method a's rate minus method b's in a column, paired over utterances (and seeds when both have the
        same)."""
        key = (metric, a, b, target, minutes)
        if key not in self._differences:
            first, second = self.cells[(a, target, minutes)], self.cells[(b, target, minutes)]
            utts = sorted(first.utterances(metric) | second.utterances(metric))
            self._differences[key] = difference_interval(first.counts(metric, utts), second.counts(metric, utts),
                                                         first.seeds == second.seeds, self.resamples)
        return self._differences[key]

    def ranked(self, metric: str, target: str, minutes: float, among=None) -> list[str]:
        """The methods of a column from the lowest rate up."""
        def rate(method: str) -> float:
            return self.estimate(metric, method, target, minutes).value

        return sorted(self.column(target, minutes, among), key=rate)

    def worse_than_best(self, metric: str, method: str, target: str, minutes: float) -> bool:
        best = self.ranked(metric, target, minutes)[0]
        return method != best and self.difference(metric, method, best, target, minutes).low > 0


def _ci(estimate: Estimate) -> str:
    return f"{estimate.value:.1f} [{estimate.low:.1f}, {estimate.high:.1f}]"


def _diff(estimate: Estimate) -> str:
    return f"{estimate.value:+.1f} [{estimate.low:+.1f}, {estimate.high:+.1f}]"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 100:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 6000 else f"{seconds / 3600:.1f} h"


def _cell_text(results: Results, metric: str, cell: Cell) -> str:
    estimate = results.estimate(metric, cell.method, cell.target, cell.minutes)
    best = results.ranked(metric, cell.target, cell.minutes)[0] == cell.method
    text = f"**{estimate.value:.1f}**" if best else f"{estimate.value:.1f}"
    text += f" [{estimate.low:.1f}, {estimate.high:.1f}]"
    if results.worse_than_best(metric, cell.method, cell.target, cell.minutes):
        text += " *"
    text += DIVERGED * bool(cell.problems(diverged)) + KEPT_INITIAL * bool(cell.problems(kept_initial))
    return text


def _seed_counts(results: Results) -> str:
    counts = [len(c.runs) for c in results.cells.values()]
    usual = max(set(counts), key=counts.count)
    others = [f"{c.method} {c.target} {_minutes(c.minutes)} ({len(c.runs)})" for c in results.cells.values()
              if len(c.runs) != usual]
    text = f"{usual} seed{'s' * (usual != 1)} per cell"
    return text + (f", except {', '.join(others)}" if others else "")


def _flag_notes(results: Results) -> list[str]:
    notes = []
    for mark, test, what in ((DIVERGED, diverged, "diverged"), (KEPT_INITIAL, kept_initial,
                                                                 "kept the initial (unadapted) model")):
        cells = [f"{c.method} {c.target} {_minutes(c.minutes)} ({len(c.problems(test))}/{len(c.runs)} seeds)"
                 for c in results.cells.values() if c.problems(test)]
        if cells:
            notes.append(f"{mark} {what}: {', '.join(cells)}.")
    return notes


def table(results: Results, metric: str, compute: dict | None = None) -> list[str]:
    """Markdown: a line saying what a cell shows, a row per method (with its training compute when given), a
    column per (target, budget), then notes on the seeds and the flagged cells."""
    name = METRICS[metric]
    lines = [f"Cell: {name} % pooled over the decodes of {_seed_counts(results)} [95% CI, bootstrap over seeds "
             f"and utterances]; **bold**: lowest of its column; `*`: significantly worse than it (paired "
             f"bootstrap); {DIVERGED}/{KEPT_INITIAL}: some seeds diverged / kept the unadapted model.", ""]
    extra = ["training steps", "training time"] if compute else []
    lines += ["| " + " | ".join(["method", *extra] + [f"{t} {_minutes(m)}" for t, m in results.columns]) + " |",
              "| --- |" + " ---: |" * (len(extra) + len(results.columns))]
    for method in results.methods:
        used = compute.get(method) if compute else None
        spent = [str(used.total_steps), _duration(used.total_seconds)] if used else ["-"] * len(extra)
        cells = [results.cell(method, t, m) for t, m in results.columns]
        texts = ["-" if c is None else _cell_text(results, metric, c) for c in cells]
        lines.append("| " + " | ".join([method, *spent, *texts]) + " |")
    notes = _flag_notes(results)
    return lines + ([""] + notes if notes else [])


def _significance(d: Estimate) -> str:
    return "significant" if d.significant else "not significant"


def _verdict(results: Results, target: str, minutes: float) -> tuple[str, str] | None:
    """(conclusion, evidence): whether the best meta-learner of a column beats multilingual, in words, and the
    difference; None without a meta-learner or multilingual."""
    meta = results.ranked("cer", target, minutes, among=[m for m in results.methods if m not in BASELINES])
    if not meta or results.cell("multilingual", target, minutes) is None:
        return None
    best = meta[0]
    d = results.difference("cer", best, "multilingual", target, minutes)
    evidence = f"{best} - multilingual = {_diff(d)} points"
    if d.high < 0:
        return "meta-learning helps", f"{evidence}, significant"
    if d.low > 0:
        return "meta-learning does not help", f"{evidence}: multilingual is significantly better"
    return "no significant difference", f"{evidence}: this run does not show that meta-learning helps"


def _problem_note(cell: Cell) -> str:
    """' (2/3 seeds diverged, 1/3 kept the initial model)', or '' for a cell without adaptation problems."""
    problems = [f"{len(cell.problems(test))}/{len(cell.runs)} seeds {what}"
                for test, what in ((diverged, "diverged"), (kept_initial, "kept the initial model"))
                if cell.problems(test)]
    return f" ({', '.join(problems)})" if problems else ""


def _lowest(results: Results, target: str, minutes: float) -> str:
    """The method with the lowest CER of a column, whether it is a baseline, and its differences to the next
    method and to scratch."""
    ranked = results.ranked("cer", target, minutes)
    best = ranked[0]
    text = f"lowest CER {best} {_ci(results.estimate('cer', best, target, minutes))}"
    text += " (a baseline)" if best in BASELINES else ""
    text += _problem_note(results.cell(best, target, minutes))
    if len(ranked) > 1:
        d = results.difference("cer", best, ranked[1], target, minutes)
        text += f"; {best} - {ranked[1]} (the next) = {_diff(d)} points, {_significance(d)}"
    if best != "scratch" and results.cell("scratch", target, minutes) is not None:
        d = results.difference("cer", best, "scratch", target, minutes)
        text += f"; {best} - scratch = {_diff(d)} points, {_significance(d)}"
    return text


def _against_multilingual(results: Results) -> list[str]:
    """Markdown: every meta-learner minus multilingual in every column."""
    meta = [m for m in results.methods if m not in BASELINES]
    columns = [(t, m) for t, m in results.columns if results.cell("multilingual", t, m) is not None]
    if not meta or not columns:
        return []
    lines = ["Every meta-learner minus multilingual, CER points [95% CI]; `*`: significant:", "",
             "| method | " + " | ".join(f"{t} {_minutes(m)}" for t, m in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for method in meta:
        texts = []
        for target, minutes in columns:
            if results.cell(method, target, minutes) is None:
                texts.append("-")
                continue
            d = results.difference("cer", method, "multilingual", target, minutes)
            texts.append(_diff(d) + " *" * d.significant)
        lines.append(f"| {method} | " + " | ".join(texts) + " |")
    return lines


def comparison(results: Results) -> list[str]:
    """Per target and budget: the lowest CER (and whether it is a baseline), and whether meta-learning beats
    multilingual, with paired differences and their CIs; the smallest budget first and summed up at the end."""
    lines = ["Differences are CER points, first minus second, with the 95% CI of a paired bootstrap (the same "
             "seeds and utterances on both sides); significant when the CI excludes 0. The best meta-learner of a "
             "cell is the one with the lowest CER there.", ""]
    smallest = {}
    for target in results.targets:
        budgets = [m for t, m in results.columns if t == target]
        for minutes in budgets:
            verdict = _verdict(results, target, minutes)
            label = f"{target}, {_minutes(minutes)}" + (" (smallest budget)" if minutes == budgets[0] else "")
            against = f" Against multilingual: {verdict[0]} ({verdict[1]})." if verdict else ""
            lines.append(f"- **{label}**: {_lowest(results, target, minutes)}.{against}")
        verdict = _verdict(results, target, budgets[0])
        if verdict:
            smallest[target] = f"{target} {_minutes(budgets[0])}: {verdict[0]} ({verdict[1]})"
    table_lines = _against_multilingual(results)
    lines += ([""] + table_lines if table_lines else [])
    if smallest:
        lines += ["", "Meta-learning against multilingual at the smallest budget: " + "; ".join(smallest.values())
                  + "."]
    return lines


def _divergence(run: dict) -> str:
    """'seed 1 at step 40: held-out loss 3.93 -> 51.8' (the reason when adapt.json gives one)."""
    record = run["adapt"]
    reason = f": {record['divergence']}" if record.get("divergence") else ""
    return f"{_seed_name(run['seed'])} at step {record.get('diverged_at', '?')}{reason}"


def adaptation_problems(results: Results) -> list[str]:
    """Markdown: the adaptations that diverged or kept their initial model, per cell, from adapt.json."""
    runs = [r for c in results.cells.values() for r in c.runs]
    known = [r for r in runs if r["adapt"] is not None]
    if not known:
        return ["No adapt.json beside the decodes: whether adaptations diverged or kept their initial model is "
                "not known."]
    unknown = f" ({len(runs) - len(known)} runs have no adapt.json)" if len(known) < len(runs) else ""
    n_diverged = sum(diverged(r["adapt"]) for r in known)
    n_kept = sum(kept_initial(r["adapt"]) for r in known)
    if not n_diverged and not n_kept:
        return [f"None of the {len(known)} adaptations with an adapt.json diverged or kept its initial model"
                f"{unknown}."]
    lines = [f"Of {len(known)} adaptations, {n_diverged} diverged and {n_kept} kept their initial (unadapted) "
             f"model{unknown}:", ""]
    for key in sorted(results.cells, key=lambda k: (results.methods.index(k[0]), results.targets.index(k[1]), k[2])):
        cell = results.cells[key]
        parts = []
        failed = [r for r in cell.runs if diverged(r["adapt"])]
        if failed:
            at = "; ".join(_divergence(r) for r in failed)
            parts.append(f"{len(failed)}/{len(cell.runs)} seeds diverged ({at})")
        kept = [r for r in cell.runs if kept_initial(r["adapt"])]
        if kept:
            parts.append(f"{len(kept)}/{len(cell.runs)} kept the initial model "
                         f"({', '.join(_seed_name(r['seed']) for r in kept)})")
        if parts:
            lines.append(f"- {cell.method}, {cell.target}, {_minutes(cell.minutes)}: {'; '.join(parts)}")
    return lines


@dataclass
class Compute:
    """The meta-training of a method's model: its own steps and seconds, and the run it started from."""
    directory: Path
    algorithm: str
    steps: int
    planned: int | None
    seconds: float | None
    init: Compute | None = None

    @property
    def total_steps(self) -> int:
        return self.steps + (self.init.total_steps if self.init else 0)

    @property
    def total_seconds(self) -> float | None:
        before = self.init.total_seconds if self.init else 0.0
        return None if self.seconds is None or before is None else self.seconds + before


def _metrics(path: Path) -> list[dict]:
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except OSError as err:
        raise InputError(f"{path}: {err.strerror} (the meta-training log)") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 ({err.reason})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{number}: not a JSON record ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise InputError(f"{path}:{number}: a record is a JSON object with an integer step")
        records.append(record)
    return records


def meta_training(directory, seen: tuple = ()) -> Compute:
    """The compute of a meta-training dir: steps and seconds from metrics.jsonl (none for scratch, which does
    not meta-train), planned steps from config.yaml, and the compute of the dir of its init model."""
    directory = Path(directory)
    config_path = directory / "config.yaml"
    if not config_path.is_file():
        raise InputError(f"{directory}: not a meta-training dir (no config.yaml)")
    config = read_yaml(config_path)
    algorithm = str(config.get("algorithm", "?"))
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    planned = train.get("steps") if isinstance(train.get("steps"), int) else None
    metrics = directory / "metrics.jsonl"
    if algorithm == "scratch" and not metrics.exists():
        return Compute(directory, algorithm, 0, 0, 0.0)
    records = _metrics(metrics)
    steps = max((r["step"] for r in records), default=0)
    stepped = [r for r in records if r["step"] > 0]
    timed = all(isinstance(r.get(TIME_KEY), int | float) for r in stepped)
    seconds = (float(stepped[-1][TIME_KEY]) if stepped else 0.0) if timed else None
    init = None
    if config.get("init"):
        init_dir = Path(str(config["init"])).parent
        if init_dir.resolve() in seen or init_dir.resolve() == directory.resolve():
            raise InputError(f"{config_path}: init {config['init']} leads back to this dir")
        if not init_dir.is_dir():
            raise InputError(f"{config_path}: init {config['init']}: no such meta-training dir (run the report "
                             "from the dir the recipe ran in)")
        init = meta_training(init_dir, (*seen, directory.resolve()))
    return Compute(directory, algorithm, steps, planned, seconds, init)


def training_compute(meta_dirs: dict[str, str]) -> dict[str, Compute]:
    """{method: its model's meta-training compute} from {method: meta-training dir}."""
    return {method: meta_training(directory) for method, directory in meta_dirs.items()}


def _made_of(used: Compute) -> str:
    parts = []
    while used is not None:
        own = f"{used.steps} steps, {_duration(used.seconds)} ({used.directory.name}"
        if used.planned is not None and used.steps < used.planned:
            own += f", incomplete: {used.planned} planned"
        parts.append(own + ")")
        used = used.init
    return " + ".join(parts)


def _adaptation_spent(results: Results, method: str) -> str:
    """Mean adaptation steps and seconds (wall_seconds: the run's time; its train_seconds are seconds of speech)
    per run of a method, by budget, from adapt.json."""
    parts = []
    for minutes in sorted({k[2] for k in results.cells if k[0] == method}):
        records = [r["adapt"] for c in results.cells.values() if (c.method, c.minutes) == (method, minutes)
                   for r in c.runs if r["adapt"] is not None]
        steps = [x["steps"] for x in records if isinstance(x.get("steps"), int | float)]
        seconds = [x["wall_seconds"] for x in records if isinstance(x.get("wall_seconds"), int | float)]
        spent = ([f"{np.mean(steps):.0f} steps"] if steps else []) + \
            ([_duration(float(np.mean(seconds)))] if seconds else [])
        if spent:
            parts.append(f"{_minutes(minutes)}: {', '.join(spent)}")
    return "; ".join(parts) or "n/a"


def compute_lines(results: Results, compute: dict[str, Compute]) -> list[str]:
    """Markdown: per method, its model's meta-training steps and time with the run it started from included,
    and its mean adaptation per run."""
    lines = [f"Meta-training steps and time ({TIME_KEY} of metrics.jsonl) of each method's model, those of the "
             "model it started from included; adaptation: mean steps and time per run (adapt.json), by budget.",
             "", "| method | steps | time | made of | adaptation per run |", "| --- | ---: | ---: | --- | --- |"]
    for method in _ordered(compute, results.methods):
        used = compute[method]
        lines.append(f"| {method} | {used.total_steps} | {_duration(used.total_seconds)} | {_made_of(used)} | "
                     f"{_adaptation_spent(results, method)} |")
    return lines


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def compression(rows: list[dict], methods=()) -> list[str]:
    """Markdown: per variant the means over the compressed adapted models (every seed a model) of nonzero
    parameters, file size, decoding real-time factor (1 thread) and CER/WER, with ratios to fp32; then CER per
    model and variant, the mean over its seeds."""
    by_model = {}
    for r in rows:
        by_model.setdefault((r["method"], r["target"], r["minutes"], r["seed"] or ""), {})[r["variant"]] = r
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
    cer = {}
    for (method, target, minutes, _), found in by_model.items():
        for variant, r in found.items():
            cer.setdefault((method, target, minutes), {}).setdefault(variant, []).append(r["cer"])
    seeds = max(len(v) for found in cer.values() for v in found.values())
    out += ["", "CER % of every compressed model" + (" (mean over its seeds)" if seeds > 1 else "") + ":", "",
            "| method | target | minutes | " + " | ".join(variants) + " |",
            "| --- | --- | ---: |" + " ---: |" * len(variants)]
    order = {m: i for i, m in enumerate(_ordered({k[0] for k in cer}, methods))}
    for (method, target, minutes), found in sorted(cer.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:])):
        cells = [f"{_mean(found[v]):.1f}" if v in found else "-" for v in variants]
        out.append(f"| {method} | {target} | {minutes:g} | " + " | ".join(cells) + " |")
    return out


def results_markdown(rows: list[dict], settings: dict[str, str], methods=(), title: str = "Results",
                     compute: dict[str, Compute] | None = None, resamples: int = RESAMPLES) -> str:
    compressed = [r for r in rows if "variant" in r]
    results = Results([r for r in rows if "variant" not in r], methods, resamples)
    decode_set = ", ".join(sorted({r["set"] for r in rows if "variant" not in r})) or "test"
    out = [f"# {title}", "", "Run settings:", ""]
    out += [f"- {key}: {value}" for key, value in settings.items()]
    out += ["", f"## CER % ({decode_set})", ""] + table(results, "cer", compute)
    out += ["", f"## WER % ({decode_set})", ""] + table(results, "wer")
    out += ["", "## Meta-learning against the baselines", ""] + comparison(results)
    out += ["", "## Adaptation problems", ""] + adaptation_problems(results) + [""]
    if compute:
        out += ["## Training compute", ""] + compute_lines(results, compute) + [""]
    if compressed:
        out += [f"## Compressed models ({decode_set})", ""] + compression(compressed, methods) + [""]
    return "\n".join(out)


def plot_cer(rows: list[dict], path, methods=(), resamples: int = RESAMPLES) -> None:
    """PNG: CER against adaptation minutes with 95% CI error bars, one panel per target, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = Results([r for r in rows if "variant" not in r], methods, resamples)
    fig, axes = plt.subplots(1, len(results.targets), figsize=(5 * len(results.targets), 4), squeeze=False)
    for ax, target in zip(axes[0], results.targets, strict=True):
        span = np.ptp([m for t, m in results.columns if t == target]) or 1.0
        for rank, method in enumerate(results.methods):
            budgets = [m for t, m in results.columns if t == target and results.cell(method, t, m) is not None]
            if not budgets:
                continue
            found = [results.estimate("cer", method, target, m) for m in budgets]
            values = np.array([e.value for e in found])
            spread = np.array([[e.value - e.low for e in found], [e.high - e.value for e in found]])
            dodge = 0.01 * span * (rank - (len(results.methods) - 1) / 2)  # error bars side by side
            ax.errorbar(np.array(budgets) + dodge, values, yerr=np.maximum(spread, 0), marker="o", capsize=3,
                        label=method)
        ax.set_title(target)
        label_minutes_axes(ax, "CER % (95% CI)")
    save_png(fig, path)


def label_minutes_axes(ax, ylabel: str) -> None:
    """Adaptation minutes along x, `ylabel` along y, a grid and the legend."""
    ax.set_xlabel("adaptation minutes")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def save_png(fig, path) -> None:
    """The figure as a PNG at path (written atomically), then closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
