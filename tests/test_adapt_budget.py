"""Adaptation that uses its budget (issue 18), on real recorded speech (Debian's asterisk-core-sounds-en prompts):
a schedule that scales with the budget, no early stop before the model has changed, divergence detected and
reported, a held-out CER criterion, Adam and layer freezing, adapt.json."""

import gzip
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from test_adapt import small_model
from test_bad_input_cli import assert_one_line_error, run, run_process

from metarecipe.config import ConfigError, load_config
from metarecipe.data import read_data_dir
from metarecipe.data.datadir import DataDir, write_data_dir
from metarecipe.decode import error_rate
from metarecipe.decode.greedy import greedy_decode
from metarecipe.features import compute_feats
from metarecipe.io.model_files import save_model, save_rates
from metarecipe.io.pools import load_pools
from metarecipe.meta.adapt import AdaptConfig, adapt, budget_split, plan_schedule
from metarecipe.meta.sampling import collate
from metarecipe.meta.tasks import task_losses
from metarecipe.text.tokens import TokenTable

SOUNDS = Path("/usr/share/asterisk/sounds/en")
TEXTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")


def english_prompts(max_seconds: float):
    """(key, normalised text, wav) of the prompts whose text is what is spoken (no digits, no [notes])."""
    for line in gzip.open(TEXTS, "rt", encoding="utf-8"):
        key, sep, text = (part.strip() for part in line.partition(":"))
        wav = SOUNDS / f"{key}.wav"
        if line.startswith(";") or not sep or "/" in key or re.search(r"[0-9\[\]]", text) or not wav.is_file():
            continue
        words = re.sub(r"[^a-z' ]", " ", text.lower()).split()
        if words and soundfile.info(wav).duration <= max_seconds:
            yield key, " ".join(words), wav


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A data dir with features of 80 real English prompts (about 3 minutes), its tokens and pool."""
    tmp = tmp_path_factory.mktemp("adapt_budget")
    prompts = sorted(english_prompts(max_seconds=5.0))[:80]
    data = write_data_dir(DataDir(wav_scp={f"en-{k}": str(w) for k, _, w in prompts},
                                  text={f"en-{k}": t for k, t, _ in prompts},
                                  utt2spk={f"en-{k}": "en" for k, _, _ in prompts}), tmp / "data" / "en")
    compute_feats(data, nj=1, progress=False)
    tokens = TokenTable.from_texts(read_data_dir(data).text.values())
    return tmp, data, tokens, load_pools([data], tokens, group_by=None)["all"]


def test_the_schedule_scales_with_the_budget(speech):
    _, _, tokens, pool = speech
    assert sum(u.seconds for u in pool) > 150
    config = dict(epochs=1.0, min_steps=1, patience=100, lr=0.01)
    runs = {minutes: adapt(small_model(tokens), pool, AdaptConfig(minutes=minutes, **config))
            for minutes in (0.5, 2.0)}
    small, large = runs[0.5], runs[2.0]
    assert large.train_seconds > 3 * small.train_seconds
    assert small.schedule.batch_seconds == 8.0  # the lower bound: 10% of 24 s is too small a batch
    assert large.schedule.batch_seconds == pytest.approx(0.1 * large.train_seconds)
    for result in runs.values():  # every planned step ran: one pass over the training part
        assert result.steps == result.schedule.planned_steps == result.schedule.steps_per_epoch
        assert result.stopped == "max_steps" and [e.step for e in result.evaluations][-1] == result.steps
    assert large.steps > small.steps
    assert plan_schedule(AdaptConfig(minutes=20), 16 * 60).batch_seconds == 32.0  # the upper bound
    assert plan_schedule(AdaptConfig(minutes=20), 16 * 60).planned_steps == 600  # 20 epochs of 30 batches
    assert plan_schedule(AdaptConfig(minutes=1, epochs=1, max_steps=30), 48).planned_steps == 30  # not min_steps


def test_no_early_stop_before_min_steps(speech):
    """A run that never improves (rates of 1e-12) still runs min_steps steps, evaluating each; the old code stopped
    after `patience` evaluations."""
    _, _, tokens, pool = speech
    config = AdaptConfig(minutes=0.3, lr=1e-12, eval_every=1, patience=1, min_steps=6)
    result = adapt(small_model(tokens), pool, config)
    assert result.schedule.steps_per_epoch < 6 < result.schedule.planned_steps
    assert result.stopped == "early" and result.steps == 6 and result.kept_initial
    assert [e.step for e in result.evaluations] == list(range(7))


def new_low(evaluation, earlier):
    return evaluation.loss < min(e.loss for e in earlier) - 1e-6 or evaluation.cer < min(e.cer for e in earlier)


def test_early_stopping_waits_while_the_held_out_loss_or_cer_reaches_new_lows(speech):
    """A fresh model's CER climbs from its random output's 90% to 100% (blanks) as its loss falls: the run goes on
    until an evaluation brings neither a new lowest loss nor a new lowest CER (patience 1)."""
    _, _, tokens, pool = speech
    config = AdaptConfig(minutes=0.3, held_out_share=0.1, lr=0.3, eval_every=2, patience=1, min_steps=1)
    result = adapt(small_model(tokens, seed=3), pool, config)
    evaluations = result.evaluations
    assert result.stopped == "early" and result.steps > 4 and evaluations[1].cer > evaluations[0].cer
    assert all(new_low(e, evaluations[:i]) for i, e in enumerate(evaluations[1:-1], start=1))
    assert not new_low(evaluations[-1], evaluations[:-1])


def held_out_loss(model, params, pool, config):
    _, held_out = budget_split(pool, config, np.random.default_rng(config.seed))
    tasks = collate([held_out], len(held_out))
    with torch.no_grad():
        return float(task_losses(model, {n: v.unsqueeze(0) for n, v in params.items()}, tasks)[0])


def test_a_huge_rate_is_reported_as_diverged_and_the_best_parameters_are_kept(speech):
    _, _, tokens, pool = speech
    model = small_model(tokens)
    config = AdaptConfig(minutes=0.5, lr=20.0, warmup_share=0.9, lr_decay="constant", eval_every=1, max_steps=40,
                         criterion="loss")
    result = adapt(model, pool, config)
    assert result.diverged and result.stopped == "diverged" and result.steps == result.diverged_at < 40
    assert "above 3 x the initial" in result.divergence
    final = result.evaluations[-1]
    assert final.step == result.diverged_at and final.loss > 3 * result.evaluations[0].loss
    assert 1 <= result.best_step < result.diverged_at and not result.kept_initial
    assert all(torch.isfinite(v).all() for v in result.params.values())
    assert held_out_loss(model, result.params, pool, config) == pytest.approx(result.best.loss, rel=1e-5)
    assert result.best.loss == min(e.loss for e in result.evaluations)


def test_scores_that_blow_up_are_a_divergence_not_a_perfect_zero_loss(speech):
    """With rates of 1000 the log-probabilities reach -1e12: the CTC loss, which zeroes infinite ones, is 0."""
    _, _, tokens, pool = speech
    result = adapt(small_model(tokens), pool, AdaptConfig(minutes=0.5, lr=1000.0, clip_grad_norm=None,
                                                          criterion="loss"))
    assert result.diverged and "infinite CTC loss" in result.divergence
    assert result.evaluations[-1].loss == 0.0 and result.kept_initial


def test_a_non_finite_gradient_stops_the_run_and_the_last_parameters_are_scored(speech):
    """Rates of 1e38 without clipping overflow the parameters: the next gradient is NaN."""
    _, _, tokens, pool = speech
    config = AdaptConfig(minutes=0.3, lr=1e38, clip_grad_norm=None, warmup_share=0.0, eval_every=5)
    result = adapt(small_model(tokens), pool, config)
    assert result.diverged_at == result.steps == 2 and "gradient norm nan at step 2" in result.divergence
    assert [e.step for e in result.evaluations] == [0, 2] and result.kept_initial
    assert all(torch.isfinite(v).all() for v in result.params.values())


def test_cer_criterion_on_a_tiny_held_out_set(speech):
    """The kept parameters' CER is that of a greedy decode of the one or two held-out prompts; cer and loss may keep
    different steps of one and the same run."""
    _, _, tokens, pool = speech
    model = small_model(tokens, seed=3)
    config = AdaptConfig(minutes=0.3, held_out_share=0.1, lr=0.3, eval_every=2, max_steps=10, patience=100)
    result = adapt(model, pool, config)
    assert not result.diverged and result.held_out_utterances <= 2 and result.held_out_seconds < 10
    _, held_out = budget_split(pool, config, np.random.default_rng(config.seed))
    tasks = collate([held_out], len(held_out))
    with torch.no_grad():
        log_probs, lengths = model.functional_forward({n: v.unsqueeze(0) for n, v in result.params.items()},
                                                      tasks.feats, tasks.lengths)
    hyps = [tokens.decode(h) for h in greedy_decode(log_probs[0], lengths[0])]
    refs = [tokens.decode(u.targets) for u in held_out]
    assert result.best.cer == error_rate(zip(refs, hyps, strict=True)).rate > 0
    assert result.best_step == min(result.evaluations, key=lambda e: (e.cer, e.loss)).step
    by_loss = adapt(model, pool, replace(config, criterion="loss"))
    assert [(e.loss, e.cer) for e in by_loss.evaluations] == [(e.loss, e.cer) for e in result.evaluations]
    assert by_loss.best_step == min(by_loss.evaluations, key=lambda e: e.loss).step


def test_cer_ties_are_broken_by_the_loss(speech):
    """A model that outputs blanks only (a frozen blank bias of 10) keeps a CER of 100% while its loss falls."""
    _, _, tokens, pool = speech
    model = small_model(tokens)
    with torch.no_grad():
        model.params["head_bias"][tokens.blank] += 10
    result = adapt(model, pool, AdaptConfig(minutes=0.3, lr=0.1, eval_every=2, max_steps=10, patience=100,
                                            freeze=["head_bias"]))
    assert {e.cer for e in result.evaluations} == {100.0}
    assert result.best_step == min(result.evaluations, key=lambda e: e.loss).step > 0


def test_freezing_keeps_frozen_parameters_bit_identical(speech):
    _, _, tokens, pool = speech
    model = small_model(tokens)
    result = adapt(model, pool, AdaptConfig(minutes=0.3, lr=0.3, freeze=["conv", "gru0_fw"], max_steps=6,
                                            criterion="loss"))
    for name, value in model.params.items():
        frozen = name.startswith(("conv", "gru0_fw"))
        assert torch.equal(result.params[name], value.detach()) == frozen, name
    with pytest.raises(ConfigError, match=r"^freeze: 'encoder' is the prefix of no parameter \(parameters: conv1"):
        adapt(model, pool, AdaptConfig(minutes=0.3, freeze=["conv", "encoder"]))
    with pytest.raises(ConfigError, match="^freeze: .* freezes every parameter that rule head trains"):
        adapt(model, pool, AdaptConfig(minutes=0.3, freeze=["head"]), rule="head")


def test_adam_adapts_and_has_no_meaning_for_meta_sgd_rates(speech):
    _, _, tokens, pool = speech
    model = small_model(tokens)
    result = adapt(model, pool, AdaptConfig(minutes=0.3, optimizer="adam", lr=3e-3, criterion="loss", max_steps=8))
    assert result.best.loss < result.evaluations[0].loss and not result.diverged
    alphas = {n: torch.full_like(p, 0.1) for n, p in model.params.items()}
    with pytest.raises(ConfigError, match="^optimizer: adam would replace the meta-learned per-element rates"):
        adapt(model, pool, AdaptConfig(minutes=0.5, optimizer="adam"), rule="metasgd", alphas=alphas)


@pytest.mark.parametrize("override, message", [
    ("optimizer=rmsprop", "optimizer: must be one of ['sgd', 'adam'], got 'rmsprop'"),
    ("criterion=wer", "criterion: must be one of ['cer', 'loss'], got 'wer'"),
    ("lr_decay=step", "lr_decay: must be one of ['cosine', 'constant'], got 'step'"),
    ("epochs=0", "epochs: must be above 0, got 0.0"),
    ("min_steps=0", "min_steps: must be at least 1, got 0"),
    ("eval_every=0", "eval_every: must be at least 1, got 0"),
    ("clip_grad_norm=-1", "clip_grad_norm: must be above 0, got -1.0"),
    ("max_batch_seconds=4", "max_batch_seconds: must be at least min_batch_seconds (8.0), got 4.0"),
    ("batch_share=1.5", "batch_share: must lie in (0, 1], got 1.5"),
    ("warmup_share=1", "warmup_share: must lie in [0, 1), got 1.0"),
    ("divergence_factor=1", "divergence_factor: must be above 1, got 1.0"),
    ("freeze=conv", "freeze: expected a list, got 'conv'"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(AdaptConfig, overrides=["minutes=1", override])
    assert str(err.value) == message


@pytest.fixture(scope="module")
def model_file(speech):
    tmp, _, tokens, _ = speech
    model = small_model(tokens)
    save_model(tmp / "meta" / "final.pt", model, tokens, {"algorithm": "metasgd", "rule": "metasgd"})
    save_rates(tmp / "meta" / "alphas.pt", {n: torch.full_like(p, 0.05) for n, p in model.params.items()})
    return tmp / "meta" / "final.pt"


def adapt_args(model, data, exp, *changes):
    return ["adapt", "--exp-dir", exp, f"model={model}", f"data={data}", "adapt.minutes=0.5", *changes]


@pytest.mark.parametrize("changes, message", [
    (["adapt.freeze=[conv, bogus]"], "adapt.freeze: 'bogus' is the prefix of no parameter"),
    (["adapt.optimizer=adam"], "adapt.optimizer: adam would replace the meta-learned per-element rates"),
    (["adapt.optimizer=adam", "rule=head", "adapt.freeze=[head_]"], "adapt.freeze: ['head_'] freezes every"),
    (["adapt.criterion=wer"], "adapt.criterion: must be one of ['cer', 'loss'], got 'wer'"),
])
def test_the_command_refuses_settings_that_cannot_work_before_writing(speech, model_file, tmp_path, changes, message):
    _, data, _, _ = speech
    assert_one_line_error(run(*adapt_args(model_file, data, tmp_path / "exp", *changes)), message)
    assert not (tmp_path / "exp").exists()


def test_adapt_json_summarises_the_run(speech, model_file, tmp_path):
    _, data, _, _ = speech
    result = run(*adapt_args(model_file, data, tmp_path / "exp", "adapt.max_steps=12", "adapt.eval_every=3"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("step 0/12: held-out loss ") and len(lines) == 6  # 5 evaluations, the summary
    assert "ran all 12 planned steps" in lines[-1]
    history = [json.loads(line) for line in (tmp_path / "exp" / "history.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "exp" / "adapt.json").read_text())
    assert [h["step"] for h in history] == [0, 3, 6, 9, 12]
    best = min(history, key=lambda h: (h["held_out_cer"], h["held_out_loss"]))
    assert summary == {
        "steps": 12, "planned_steps": 12, "best_step": best["step"],
        "initial": {"loss": history[0]["held_out_loss"], "cer": history[0]["held_out_cer"]},
        "best": {"loss": best["held_out_loss"], "cer": best["held_out_cer"]},
        "final": {"loss": history[-1]["held_out_loss"], "cer": history[-1]["held_out_cer"]},
        "diverged": False, "diverged_at": None, "divergence": None, "stopped": "max_steps",
        "kept_initial": best["step"] == 0, "criterion": "cer", "train_seconds": summary["train_seconds"],
        "held_out_seconds": summary["held_out_seconds"], "train_utterances": summary["train_utterances"],
        "held_out_utterances": summary["held_out_utterances"], "batch_seconds": 8.0,
        "wall_seconds": summary["wall_seconds"], "optimizer": "sgd", "lr": None, "rule": "metasgd"}
    assert 24 <= summary["train_seconds"] and summary["train_seconds"] + summary["held_out_seconds"] < 30 + 5
    assert summary["train_utterances"] > summary["held_out_utterances"] >= 1 and summary["wall_seconds"] > 0
    assert (result.stderr != "") == summary["kept_initial"]  # the warning line
    assert history[1]["train_loss"] > 0 and history[1]["grad_norm"] > 0 and history[0]["train_loss"] is None


def test_a_diverging_run_says_so_in_a_warning_line_and_in_adapt_json(speech, model_file, tmp_path):
    _, data, _, _ = speech
    result = run_process(*adapt_args(model_file, data, tmp_path / "exp", "rule=sgd", "adapt.lr=1000"))
    assert result.returncode == 0, result.stderr
    warning = result.stderr.splitlines()
    assert len(warning) == 1 and warning[0].startswith(f"metarecipe: warning: {tmp_path / 'exp'}: DIVERGED at step ")
    assert "kept the INITIAL (unadapted) parameters" in warning[0]
    summary = json.loads((tmp_path / "exp" / "adapt.json").read_text())
    assert summary["diverged"] and summary["stopped"] == "diverged" and summary["kept_initial"]
    assert summary["diverged_at"] == summary["steps"] < summary["planned_steps"]
    assert summary["best_step"] == 0 and summary["best"] == summary["initial"]
    assert summary["lr"] == 1000 and summary["rule"] == "sgd"
    assert math.isfinite(summary["initial"]["loss"])
