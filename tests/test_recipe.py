"""recipes/cv_lowresource/run.sh end to end with the --mini preset: results, idempotent re-runs, re-decoding one
stage, SIGKILL at three moments, and a corpus in another layout plugged in as the README says."""

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from metarecipe.data.audio import read_audio

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def copy_recipes(where: Path) -> Path:
    """A fresh copy of recipes/ (utils is a relative link inside); returns its cv_lowresource."""
    shutil.copytree(RECIPES, where / "recipes", symlinks=True,
                    ignore=shutil.ignore_patterns("data*", "exp*", "RESULTS.md", "*.png"))
    return where / "recipes" / "cv_lowresource"


def run_recipe(recipe: Path, *args, timeout=600) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(["bash", "run.sh", "--mini", *args], cwd=recipe, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return time.perf_counter() - start, done.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted --mini run."""
    recipe = copy_recipes(tmp_path_factory.mktemp("reference"))
    seconds, _ = run_recipe(recipe)
    print(f"--mini run: {seconds:.1f} s")
    return recipe


def results_tables(recipe: Path) -> str:
    """RESULTS.md up to the compressed models (whose table holds decoding times)."""
    return (recipe / "RESULTS.md").read_text().partition("## Compressed models")[0]


def test_mini_run_writes_results_for_every_method_budget_and_a_plot(reference):
    text = results_tables(reference)
    for method in ("scratch", "multilingual", "fomaml"):
        rows = [line for line in text.splitlines() if line.startswith(f"| {method} |")]
        assert len(rows) == 2, rows  # CER and WER
        assert all(len(row.split("|")) == 5 for row in rows)  # method + eo 0.2 min + eo 0.4 min
    assert "| method | eo 0.2 min | eo 0.4 min |" in text
    assert (reference / "cer_vs_minutes.png").stat().st_size > 1000
    assert (reference / "exp_mini" / "meta_multilingual" / "final.pt").exists()
    assert (reference / "exp_mini" / "meta_fomaml" / "config.yaml").read_text().count("meta_multilingual/final.pt")


def test_mini_run_compresses_and_reports_every_variant(reference):
    text = (reference / "RESULTS.md").read_text()
    means = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in
             text.partition("## Compressed models")[2].splitlines() if line.startswith("| ") and "x |" in line}
    assert set(means) == {"fp32", "pruned", "int8", "pruned_int8"}
    params = {variant: float(cells[0].replace(",", "")) for variant, cells in means.items()}
    size = {variant: float(cells[1]) for variant, cells in means.items()}
    assert params["pruned"] < params["fp32"] and size["pruned_int8"] <= size["int8"] < size["fp32"]
    assert "| multilingual | eo | 0.2 |" in text and "| fomaml | eo | 0.2 |" not in text  # --compress-methods
    compressed = reference / "exp_mini/adapt/multilingual_eo_0.2m/compress"
    assert '"threads": 1' in (compressed / "pruned_int8/decode_test/decode.json").read_text()
    assert json.loads((compressed / "pruned/model.json").read_text())["config"]["distill"] == 1.0
    assert json.loads((compressed / "pruned_int8/model.json").read_text())["model"].endswith("pruned/model.pt")


def test_a_second_run_does_nothing(reference):
    markers = {p: p.stat().st_mtime_ns for p in reference.rglob(".done")}
    seconds, log = run_recipe(reference)
    assert "running:" not in log
    assert {p: p.stat().st_mtime_ns for p in reference.rglob(".done")} == markers
    print(f"re-run: {seconds:.1f} s")


def test_stage_6_with_another_beam_redecodes_only(reference, tmp_path):
    recipe = copy_recipes(tmp_path)
    for name in ("data_mini", "exp_mini"):
        shutil.copytree(reference / name, recipe / name, symlinks=True)
    before = {p: p.stat().st_mtime_ns for p in recipe.rglob(".done")}
    _, log = run_recipe(recipe, "--stage", "6", "--stop-stage", "6", "--beam", "2")
    after = {p: p.stat().st_mtime_ns for p in recipe.rglob(".done")}
    changed = {p.parent.name for p in after if after[p] != before.get(p)}
    assert changed == {"decode_test"}
    assert sum(1 for p in after if p.parent.name == "decode_test" and after[p] != before[p]) == 6  # 3 methods x 2
    assert log.count("running: decode_and_score") == 6 and "--beam 2" in log
    assert "running: metarecipe adapt" not in log and "meta_train_cmd" not in log


def start(recipe: Path, log_path: Path) -> subprocess.Popen:
    return subprocess.Popen(["bash", "run.sh", "--mini"], cwd=recipe, stdout=subprocess.DEVNULL,
                            stderr=open(log_path, "w"), start_new_session=True)


def kill_when(run: subprocess.Popen, ready, rng: random.Random, timeout=300) -> None:
    """SIGKILL the whole recipe (its process group) shortly after ready() holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert run.poll() is None, "the recipe ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(rng.uniform(0.1, 0.6))
    assert run.poll() is None, "the recipe ended before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def test_killed_in_features_meta_training_and_decoding_and_rerun_gives_the_same_results(reference, tmp_path):
    recipe = copy_recipes(tmp_path)
    corpus = recipe / "data_mini" / "corpus"
    shutil.copytree(reference / "data_mini" / "corpus", corpus)  # the corpus is given; everything else is redone
    rng = random.Random()
    log = tmp_path / "log"
    exp = recipe / "exp_mini"

    kill_when(start(recipe, log), lambda: "running: metarecipe compute-feats" in log.read_text(), rng)
    assert not all((recipe / "data_mini" / lang / split / "fbank" / ".done").exists()
                   for lang in ("de", "es", "eo") for split in ("train", "dev", "test"))
    kill_when(start(recipe, log), lambda: any((exp / "meta_multilingual" / "ckpt").glob("*.json")), rng)
    assert not (exp / "meta_multilingual" / ".done").exists()
    kill_when(start(recipe, log), lambda: "running: decode_and_score" in log.read_text(), rng)
    assert not (recipe / "RESULTS.md").exists()
    run_recipe(recipe)
    assert results_tables(recipe) == results_tables(reference)


def folder_corpus(reference: Path, where: Path) -> Path:
    """The reference's demo clips as a folder of wav, flac and mp3 files with one transcripts.tsv."""
    rows = ["path\tsentence\tspeaker\tlanguage\tsplit"]
    for lang in ("de", "es", "eo"):
        for split in ("train", "dev", "test"):
            data = reference / "data_mini" / lang / split
            texts = dict(line.split(" ", 1) for line in (data / "text").read_text().splitlines())
            speakers = dict(line.split() for line in (data / "utt2spk").read_text().splitlines())
            for index, (utt, source) in enumerate(
                    line.split(" ", 1) for line in (data / "wav.scp").read_text().splitlines()):
                fmt = ("wav", "flac", "mp3")[index % 3]
                target = where / "audio" / lang / f"{utt}.{fmt}"
                target.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(target, np.asarray(read_audio(source)), 16000)
                rows.append(f"audio/{lang}/{utt}.{fmt}\t{texts[utt].upper()}\t{speakers[utt]}\t{lang}\t{split}")
    (where / "transcripts.tsv").write_text("\n".join(rows) + "\n")
    return where


def test_a_corpus_in_another_layout_runs_through_the_recipe_as_the_readme_says(reference, tmp_path):
    corpus = folder_corpus(reference, tmp_path / "my_corpus")
    recipe = copy_recipes(tmp_path)
    # README, "Plugging in a corpus": copy the template plug-in into local/, then run with --corpus/--corpus-dir
    shutil.copy(recipe.parent / "TEMPLATE" / "local" / "folder_tsv.py", recipe / "local" / "my_corpus.py")
    run_recipe(recipe, "--corpus", "local/my_corpus.py", "--corpus-dir", str(corpus))
    text = results_tables(recipe)
    assert f"{corpus} (local/my_corpus.py)" in text
    assert text.count("| fomaml |") == 2
    wav_scp = (recipe / "data_mini" / "eo" / "train" / "wav.scp").read_text()
    assert all(f".{fmt}" in wav_scp for fmt in ("wav", "flac", "mp3"))
