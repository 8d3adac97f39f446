"""recipes/speaker_noise/run.sh end to end with the --mini preset for each task kind on the built-in data
(espeak-ng speakers and accents; noise mixed into the asterisk prompts): every stage, a report with the unadapted
model as the reference row and a cell per method and budget, the task grouping the kind names, an idempotent
re-run."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
FORTUNES = Path("/usr/share/games/fortunes")
NEEDS = {
    "speaker": (shutil.which("espeak-ng") and (FORTUNES / "es").exists(), "espeak-ng and fortunes-es"),
    "accent": (shutil.which("espeak-ng") and (FORTUNES / "fortunes").exists(), "espeak-ng and fortunes-min"),
    "noise": (Path("/usr/share/asterisk/sounds/en").is_dir() and Path("/usr/share/asterisk/moh").is_dir(),
              "the asterisk prompts and music on hold"),
}
GROUPING = {"speaker": "utt2spk", "accent": "utt2accent", "noise": "utt2noise"}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("recipes")
    shutil.copytree(RECIPES, where / "recipes", symlinks=True, ignore=shutil.ignore_patterns("data*", "exp*"))
    return where / "recipes" / "speaker_noise"


def run_recipe(recipe: Path, *args) -> str:
    done = subprocess.run(["bash", "run.sh", "--mini", *args], cwd=recipe, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stderr


@pytest.mark.parametrize("kind", ["speaker", "accent", "noise"])
def test_mini_run_of_each_task_kind_reports_every_method_and_budget_against_the_unadapted_model(recipe, kind):
    available, what = NEEDS[kind]
    if not available:
        pytest.skip(f"{what} not installed (.ci/run installs them)")
    log = run_recipe(recipe, "--task-kind", kind)
    for number in range(7):
        assert re.search(rf"stage {number} \([a-z +-]+\): done", log), f"stage {number} did not run"
    exp, corpus = recipe / "exp_mini" / kind, recipe / "data_mini" / kind / "corpus"
    targets = (corpus / "targets" / "list").read_text().split()
    assert targets and (corpus / "source" / "train" / GROUPING[kind]).exists()
    assert f"data.group_by={GROUPING[kind][4:]}" in (exp / "meta_pooled" / "cmd").read_text()
    text = (recipe / "exp_mini" / f"RESULTS_{kind}.md").read_text()
    table = text.partition("## CER %")[2].partition("\n## ")[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| method", "| ---"))}
    assert list(rows) == ["unadapted (reference)", "input", "fomaml"]
    cell = r"[0-9.]+ \[[0-9.]+, [0-9.]+\]" if len(targets) > 1 else r"[0-9.]+"  # one target, one seed: a point
    for cells in rows.values():
        assert len(cells) == 1 and re.fullmatch(cell, cells[0]), cells
    assert f"Targets ({len(targets)})" in text and "relative reduction against unadapted over" in text
    assert (recipe / "exp_mini" / f"cer_vs_minutes_{kind}.png").stat().st_size > 1000
    for target in targets:
        summary = json.loads((exp / "adapt" / f"input_{target}_0.5m_s0" / "adapt.json").read_text())
        assert summary["rule"] == "input"
        scores = json.loads((exp / "adapt" / f"unadapted_{target}_0m_s0" / "decode_test" / "scores.json")
                            .read_text())
        assert scores["tags"] == {"method": "unadapted", "target": target, "minutes": "0", "seed": "0",
                                  "set": "test"}
    if kind == "speaker":  # a real voice (conf/mini.conf: the asterisk Italian speaker) is reported apart
        real = (recipe / "exp_mini" / "RESULTS_speaker_real.md").read_text()
        assert "Targets (1): real_it" in real and "| real_it | input |" in real
        summary = json.loads((exp / "adapt" / "input_real_it_0.5m_s0" / "adapt.json").read_text())
        assert summary["rule"] == "input"
    again = run_recipe(recipe, "--task-kind", kind, "--stop-stage", "5")
    assert "running:" not in again  # everything done is kept
