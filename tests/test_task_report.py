"""`metarecipe task-report`: CER over many targets, mean and 95% CI over targets and seeds, against a reference,
from the scores `metarecipe score` writes."""

import numpy as np
import pytest

from metarecipe.cli.main import main
from metarecipe.errors import InputError
from metarecipe.report import collect
from metarecipe.task_report import TargetScores, estimate, mean_cer, paired, task_results_markdown

SENTENCE = "abcdefghij"  # 10 characters: each wrong one is 10 points of CER


def score(root, method, target, minutes, seed, wrong):
    """Scores a decode of one 10-character utterance with `wrong` characters substituted."""
    out = root / f"{method}_{target}_{minutes}_s{seed}"
    out.mkdir(parents=True)
    (out / "ref").write_text(f"u1 {SENTENCE}\n", encoding="utf-8")
    (out / "hyp").write_text(f"u1 {'z' * wrong}{SENTENCE[wrong:]}\n", encoding="utf-8")
    assert main(["score", "--ref", str(out / "ref"), "--hyp", str(out / "hyp"), "--out-dir", str(out / "decode"),
                 "--tag", f"method={method}", "--tag", f"target={target}", "--tag", f"minutes={minutes}",
                 "--tag", f"seed={seed}", "--tag", "set=test"]) == 0


@pytest.fixture()
def run(tmp_path):
    """Four speakers: unadapted 50% CER each; finetune 40% (both seeds); meta 20% and 40% on its two seeds;
    a fourth method on one speaker only."""
    for target in ("spk1", "spk2", "spk3", "spk4"):
        score(tmp_path, "unadapted", target, 0, 0, 5)
        for seed in (0, 1):
            score(tmp_path, "finetune", target, 1, seed, 4)
            score(tmp_path, "meta", target, 1, seed, 2 if seed == 0 else 4)
    score(tmp_path, "lonely", "spk1", 1, 0, 1)
    return tmp_path


def test_means_reductions_and_verdicts_follow_the_scores(run, tmp_path):
    scores = TargetScores(collect(run, "test"), "unadapted", ["finetune"])
    assert scores.methods[:2] == ["unadapted", "finetune"] and scores.budgets == [1.0]
    assert mean_cer(scores, "unadapted", 1.0).value == pytest.approx(50.0)
    meta = mean_cer(scores, "meta", 1.0)
    assert meta.value == pytest.approx(30.0) and 20.0 <= meta.low <= meta.value <= meta.high <= 40.0
    reduction, targets = paired(scores, "meta", "unadapted", 1.0, relative=True)
    assert targets == 4 and reduction.value == pytest.approx(40.0)  # 1 - 30/50
    difference, _ = paired(scores, "finetune", "unadapted", 1.0, relative=False)
    assert (difference.value, difference.low, difference.high) == pytest.approx((-10.0, -10.0, -10.0))
    lonely = mean_cer(scores, "lonely", 1.0)
    assert lonely.value == pytest.approx(10.0) and np.isnan(lonely.low)  # one target, one seed: no interval
    text = task_results_markdown(collect(run, "test"), "unadapted", ["finetune"], {"kind": "speaker"},
                                 ["finetune", "meta"])
    assert "| unadapted (reference) | 50.0 [50.0, 50.0] |" in text
    assert "| finetune | 40.0 [40.0, 40.0] |" in text
    assert "finetune - unadapted: -10.0 [-10.0, -10.0] CER points: lower, significantly" in text
    assert "best lonely" in text  # the largest reduction, though on one speaker: the line says over how many
    assert "80.0% relative reduction against unadapted over 1 target " in text
    assert "10.0 (1 of 4 targets)" in text
    assert "- meta against unadapted: CER significantly lower at 1 min (-20.0 [" in text
    assert "- meta against finetune: CER significantly lower at 1 min (-10.0 [" in text
    assert "- lonely against unadapted: no interval (one target, one seed) at 1 min" in text
    assert "- finetune against" not in text  # a baseline is compared with, not summarised
    per_target = text.partition("## CER % per target")[2]
    assert "| spk1 | meta | 30.0 |" in per_target and "| spk1 | lonely | 10.0 |" in per_target
    assert "| spk2 | unadapted | 50.0 |" in per_target and "| spk2 | lonely |" not in per_target


def test_the_interval_resamples_targets_then_seeds():
    spread = [np.array([10.0, 30.0]), np.array([20.0, 20.0]), np.array([50.0, 10.0])]
    found = estimate(spread, resamples=2000)
    assert found.value == pytest.approx(np.mean([20.0, 20.0, 30.0]))
    assert found.low < found.value < found.high
    assert estimate([np.array([5.0, 5.0])] * 3).low == pytest.approx(5.0)  # nothing varies: a point


def test_the_cli_writes_the_report_and_plot_and_names_a_missing_reference(run, tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    assert main(["task-report", str(run), "--out", str(out), "--reference", "unadapted", "--baselines", "finetune",
                 "--plot", str(tmp_path / "cer.png"), "--set", "test", "--setting", "task kind=speaker"]) == 0
    assert out.read_text().startswith("# Results") and (tmp_path / "cer.png").stat().st_size > 1000
    assert main(["task-report", str(run), "--out", str(out), "--reference", "unadapted", "--targets", "spk2",
                 "spk3"]) == 0
    assert "Targets (2): spk2, spk3" in out.read_text() and "lonely" not in out.read_text()
    assert main(["task-report", str(run), "--out", str(out), "--reference", "unadapted", "--targets", "spk9"]) == 1
    assert "no scores of target(s) spk9" in capsys.readouterr().err
    with pytest.raises(InputError, match="no scores of the reference method 'pooled'"):
        TargetScores(collect(run, "test"), "pooled")
    assert main(["task-report", str(run), "--out", str(out), "--reference", "pooled"]) == 1
    assert "no scores of the reference method 'pooled'" in capsys.readouterr().err
