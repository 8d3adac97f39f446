"""`metarecipe report` on exp trees scored by `metarecipe score` (issue 18, an honest comparison): a 95% CI per
cell over seeds and utterances, the significantly worse cells marked, adaptation problems flagged, training
compute beside the table, a baseline never hidden behind a "best meta-learned" line, and the old layout (one
untagged seed) still reported."""

import contextlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metarecipe.cli.main import main

REPO = Path(__file__).resolve().parents[1]

WORDS = "the quick brown fox jumps over a lazy dog while seven small birds sing in the old tree".split()


def run(*args):
    """`metarecipe ARGS` through the command's entry point in this process, as a CompletedProcess."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_process(*args, cwd):
    """`python -m metarecipe ARGS` in a process of its own, in cwd, with this checkout's package."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "metarecipe", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def references(where, utts=40):
    rng = random.Random(0)
    texts = {f"utt{k:03d}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) for k in range(utts)}
    (where / "ref").write_text("".join(f"{u} {t}\n" for u, t in texts.items()))
    return texts


def corrupted(text: str, rate: float, rng: random.Random) -> str:
    """text with about `rate` of its characters substituted or deleted."""
    out = []
    for char in text:
        draw = rng.random()
        out.append(char if draw >= rate else "" if draw < rate / 2 else rng.choice("xyzqk"))
    return "".join(out)


def scored(root, method, target, minutes, rate, seed=None, adapt=None, variant=None):
    """An adaptation dir with a decode scored by `metarecipe score` (hypotheses with about `rate` character
    errors), tagged like the recipe's (seed only when given, variant for a compressed model), and its adapt.json
    when given; returns the decode dir."""
    texts = (root / "ref").read_text().splitlines()
    adapt_dir = root / "exp" / "adapt" / (f"{method}_{target}_{minutes}m" + (f"_s{seed}" if seed is not None else ""))
    decode = adapt_dir / (f"compress/{variant}/decode_test" if variant else "decode_test")
    decode.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{method} {target} {minutes} {seed} {variant}")
    hyp = decode / "hyp"
    hyp.write_text("".join(f"{line.split(' ', 1)[0]} {corrupted(line.split(' ', 1)[1], rate, rng)}\n"
                           for line in texts))
    tags = [f"method={method}", f"target={target}", f"minutes={minutes}", "set=test"]
    tags += [f"seed={seed}"] * (seed is not None) + [f"variant={variant}"] * bool(variant)
    result = run("score", "--ref", root / "ref", "--hyp", hyp, "--out-dir", decode,
                 *[arg for tag in tags for arg in ("--tag", tag)])
    assert result.returncode == 0, result.stderr
    if adapt is not None:
        (adapt_dir / "adapt.json").write_text(json.dumps(adapt))
    return decode


def adapt_record(diverged=False, steps=40):
    return {"steps": steps, "planned_steps": 60, "best_step": 0 if diverged else steps, "diverged": diverged,
            "diverged_at": 30 if diverged else None, "stopped": "diverged" if diverged else "max_steps",
            "divergence": "held-out loss 4 -> 60" if diverged else None, "kept_initial": diverged,
            "train_seconds": 48.0, "wall_seconds": 15.0, "initial": {"loss": 4.0},
            "best": {"loss": 4.0 if diverged else 2.0}, "optimizer": "sgd", "lr": 0.02, "rule": "sgd"}


def meta_dir(root, name, algorithm, steps, seconds_per_step, init=None):
    """A meta-training dir as metarecipe meta-train leaves it: config.yaml and metrics.jsonl with the seconds."""
    directory = root / "exp" / name
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(f"algorithm: {algorithm}\ntrain:\n  steps: {steps}\n"
                                           + (f"init: {init}\n" if init else ""))
    records = [{"step": 0}] + [{"step": s, "loss": 1.0, "train_seconds": s * seconds_per_step}
                               for s in range(1, steps + 1)]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def section(text: str, title: str) -> str:
    return text.partition(f"## {title}")[2].partition("\n## ")[0]


def row(text: str, method: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {method} |"))
    return [cell.strip() for cell in line.split("|")[1:-1]]


def cer(decode) -> float:
    return json.loads((decode / "scores.json").read_text())["cer"]["rate"]


@pytest.fixture(scope="module")
def seeded_tree(tmp_path_factory):
    """scratch, multilingual and maml on eo at 1 and 2 minutes, 3 seeds each; maml's seed 1 at 1 minute diverged
    and kept its initial model; multilingual meta-trained 400 steps, maml 150 more from it."""
    tmp_path = tmp_path_factory.mktemp("seeded")
    references(tmp_path)
    decodes = {}
    for method, rate in (("scratch", 0.6), ("multilingual", 0.3), ("maml", 0.1)):
        for minutes in (1, 2):
            for seed in range(3):
                record = adapt_record(diverged=(method, minutes, seed) == ("maml", 1, 1))
                decodes[method, minutes, seed] = scored(tmp_path, method, "eo", minutes, rate, seed, record)
    meta_dir(tmp_path, "meta_multilingual", "multilingual", 400, 1.5)
    meta_dir(tmp_path, "meta_maml", "maml", 150, 2.0, init="exp/meta_multilingual/final.pt")
    (tmp_path / "exp" / "meta_scratch").mkdir()
    (tmp_path / "exp" / "meta_scratch" / "config.yaml").write_text("algorithm: scratch\n")
    return tmp_path, decodes


@pytest.fixture
def seeded_run(seeded_tree, tmp_path):
    """A copy of the seeded tree to damage: (its root, its decode dirs)."""
    root, decodes = seeded_tree
    shutil.copytree(root, tmp_path / "run")
    return tmp_path / "run", {key: tmp_path / "run" / path.relative_to(root) for key, path in decodes.items()}


def test_report_gives_a_ci_per_cell_marks_worse_cells_adaptation_problems_and_compute(seeded_run):
    root, decodes = seeded_run
    done = run_process("report", "exp/adapt", "--out", "RESULTS.md", "--plot", "cer.png", "--set", "test",
                       "--methods", "scratch", "multilingual", "maml", "--meta-dir", "scratch=exp/meta_scratch",
                       "--meta-dir", "multilingual=exp/meta_multilingual", "--meta-dir", "maml=exp/meta_maml", cwd=root)
    assert done.returncode == 0, done.stderr
    text = (root / "RESULTS.md").read_text()
    assert done.stdout.strip() == text.strip() and (root / "cer.png").stat().st_size > 1000
    cer_table = section(text, "CER % (test)")
    assert "| method | training steps | training time | eo 1 min | eo 2 min |" in cer_table
    assert "3 seeds per cell [95% CI, bootstrap over seeds and utterances]" in cer_table
    cell = re.compile(r"^(\*\*)?(\d+\.\d)(\*\*)? \[(\d+\.\d), (\d+\.\d)\]( \*)?(†)?(‡)?$")
    for method in ("scratch", "multilingual", "maml"):
        cells = row(cer_table, method)[3:]
        for minutes, found in zip((1, 2), cells, strict=True):
            match = cell.match(found)
            assert match, found
            mean = sum(cer(decodes[method, minutes, s]) for s in range(3)) / 3  # the seeds decode the same set
            assert float(match[2]) == pytest.approx(mean, abs=0.051)
            assert float(match[4]) < mean < float(match[5])
            assert bool(match[1]) == (method == "maml") and bool(match[6]) == (method != "maml")  # best / worse
            flagged = (method, minutes) == ("maml", 1)
            assert bool(match[7]) == bool(match[8]) == flagged
    assert row(cer_table, "scratch")[1:3] == ["0", "0 s"]
    assert row(cer_table, "multilingual")[1:3] == ["400", "10.0 min"]
    assert row(cer_table, "maml")[1:3] == ["550", "15.0 min"]  # its own 150 steps and multilingual's 400
    assert "† diverged: maml eo 1 min (1/3 seeds)." in cer_table
    assert ("maml, eo, 1 min: 1/3 seeds diverged (seed 1 at step 30: held-out loss 4 -> 60); 1/3 kept the initial "
            "model (seed 1)") in section(text, "Adaptation problems")
    compute = section(text, "Training compute")
    assert "150 steps, 5.0 min (meta_maml) + 400 steps, 10.0 min (meta_multilingual)" in compute
    assert "1 min: 40 steps, 15 s" in compute  # the run's wall_seconds (train_seconds are seconds of speech)
    against = section(text, "Meta-learning against the baselines")
    assert "**eo, 1 min (smallest budget)**: lowest CER maml" in against
    assert re.search(r"Against multilingual: meta-learning helps \(maml - multilingual = -\d+\.\d \[-\d+\.\d, "
                     r"-\d+\.\d\] points, significant\)", against)


def test_a_baseline_better_than_every_meta_learner_is_called_the_lowest_and_meta_learning_does_not_help(tmp_path):
    references(tmp_path)
    for method, rate in (("scratch", 0.05), ("multilingual", 0.1), ("maml", 0.3), ("metasgd", 0.35)):
        for seed in range(2):
            scored(tmp_path, method, "eo", 1, rate, seed)
    result = run("report", tmp_path / "exp" / "adapt", "--out", tmp_path / "RESULTS.md")
    assert result.returncode == 0, result.stderr
    against = section((tmp_path / "RESULTS.md").read_text(), "Meta-learning against the baselines")
    assert "best meta-learned" not in against
    assert "lowest CER scratch" in against and "(a baseline)" in against
    assert "Against multilingual: meta-learning does not help (maml - multilingual = +" in against
    assert "multilingual is significantly better" in against
    assert re.search(r"\| metasgd \| \+\d+\.\d \[\+\d+\.\d, \+\d+\.\d\] \* \|", against)


def test_the_old_layout_one_untagged_seed_without_adapt_json_still_reports(tmp_path):
    references(tmp_path)
    decodes = {(m, x): scored(tmp_path, m, "eo", x, rate) for m, rate in (("multilingual", 0.2), ("fomaml", 0.21))
               for x in (1, 2)}
    meta_dir(tmp_path, "meta_fomaml", "fomaml", 20, 1.0)
    metrics = tmp_path / "exp" / "meta_fomaml" / "metrics.jsonl"  # as today's trainer writes it: no seconds
    metrics.write_text(re.sub(r', "train_seconds": [0-9.]+', "", metrics.read_text()))
    result = run("report", tmp_path / "exp" / "adapt", "--out", tmp_path / "RESULTS.md", "--set", "test",
                 "--meta-dir", f"fomaml={tmp_path / 'exp' / 'meta_fomaml'}")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "RESULTS.md").read_text()
    cer_table = section(text, "CER % (test)")
    assert "1 seed per cell" in cer_table
    assert "| method | training steps | training time | eo 1 min | eo 2 min |" in cer_table
    assert row(cer_table, "fomaml")[1:3] == ["20", "n/a"] and row(cer_table, "multilingual")[1:3] == ["-", "-"]
    for (method, minutes), decode in decodes.items():
        found = row(cer_table, method)[minutes + 2]
        assert re.fullmatch(rf"(\*\*)?{cer(decode):.1f}(\*\*)? \[\d+\.\d, \d+\.\d\]( \*)?", found), found
    assert "No adapt.json beside the decodes" in section(text, "Adaptation problems")
    assert "| fomaml | 20 | n/a | 20 steps, n/a (meta_fomaml) | n/a |" in section(text, "Training compute")


def test_compressed_models_of_several_seeds_are_averaged(tmp_path):
    references(tmp_path)
    for seed in range(2):
        scored(tmp_path, "multilingual", "eo", 1, 0.2, seed)
        for variant, size in (("fp32", 4000), ("int8", 1000)):
            decode = scored(tmp_path, "multilingual", "eo", 1, 0.2 + 0.05 * (variant == "int8"), seed,
                            variant=variant)
            model = decode.parent / "model.pt"
            (decode / "decode.json").write_text(json.dumps({"model": str(model), "rtf": 0.1 if size > 1000 else 0.05}))
            (decode.parent / "model.json").write_text(json.dumps({"nonzero_params": size, "bytes": size}))
    result = run("report", tmp_path / "exp" / "adapt", "--out", tmp_path / "RESULTS.md")
    assert result.returncode == 0, result.stderr
    compressed = section((tmp_path / "RESULTS.md").read_text(), "Compressed models (test)")
    assert "Means over 2 adapted models" in compressed and "| int8 | 1,000 | 1 | 4.00x | 0.0500 | 2.00x |" in compressed
    int8 = [json.loads(p.read_text())["cer"]["rate"] for p in
            sorted((tmp_path / "exp" / "adapt").glob("*/compress/int8/decode_test/scores.json"))]
    assert "| multilingual | eo | 1 | " in compressed and f"{sum(int8) / 2:.1f} |" in compressed


def break_per_utt(root):
    (root / "exp/adapt/maml_eo_1m_s0/decode_test/per_utt_cer").write_text("utt000 #csid 3 0 0 0\n")
    return "maml_eo_1m_s0/decode_test/per_utt_cer"


def duplicate_seed(root):
    shutil.copytree(root / "exp/adapt/maml_eo_1m_s0", root / "exp/adapt/maml_eo_1m_s0_again")
    return "maml_eo_1m_s0"


def leave_an_unseeded_run(root):
    scored(root, "maml", "eo", 1, 0.1)  # exp/adapt/maml_eo_1m, as the recipe wrote it before seeds
    return "maml_eo_1m/decode_test/scores.json: no seed tag"


def corrupt_adapt_json(root):
    (root / "exp/adapt/maml_eo_2m_s2/adapt.json").write_text("{not json")
    return "maml_eo_2m_s2/adapt.json"


def corrupt_metrics(root):
    with open(root / "exp/meta_maml/metrics.jsonl", "a") as f:
        f.write("{\"step\": \n")
    return "meta_maml/metrics.jsonl:152"


@pytest.mark.parametrize("damage", [break_per_utt, duplicate_seed, leave_an_unseeded_run, corrupt_adapt_json,
                                    corrupt_metrics])
def test_bad_inputs_are_one_line_naming_the_file_and_nothing_is_written(seeded_run, damage, monkeypatch):
    root, _ = seeded_run
    name = damage(root)
    monkeypatch.chdir(root)  # where the recipe runs: meta_maml's init is exp/meta_multilingual/final.pt
    result = run("report", "exp/adapt", "--out", "RESULTS.md", "--meta-dir", "maml=exp/meta_maml")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and name in result.stderr, result.stderr
    assert not (root / "RESULTS.md").exists()


@pytest.mark.parametrize("option, message", [("maml", "--meta-dir wants METHOD=DIR, got 'maml'"),
                                             ("maml=exp/nowhere", "exp/nowhere: not a meta-training dir"),
                                             ("maml=exp/meta_maml maml=exp/meta_multilingual", "maml given twice")])
def test_a_bad_meta_dir_is_one_line_and_nothing_is_written(seeded_run, option, message, monkeypatch):
    monkeypatch.chdir(seeded_run[0])
    result = run("report", "exp/adapt", "--out", "RESULTS.md", *[f"--meta-dir={o}" for o in option.split()])
    assert result.returncode == 1 and "Traceback" not in result.stderr and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert not (seeded_run[0] / "RESULTS.md").exists()
