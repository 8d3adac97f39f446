"""`metarecipe meta-train`: experiment dirs, exact resume after SIGKILL, and errors before any work."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_commonvoice import make_release

from metarecipe.cli.main import main
from metarecipe.data.corpora import get_corpus
from metarecipe.features import compute_feats
from metarecipe.io.model_files import load_model, read_model_file
from metarecipe.models import BatchedCTCModel, ProgressiveCTCModel

# fsync made slow, so that a kill can be aimed inside a checkpoint write; then the command itself
KILLABLE = """
import os, sys, time
if os.environ.get("SLOW_FSYNC"):
    fsync = os.fsync
    os.fsync = lambda fd: (time.sleep(0.3), fsync(fd))
from metarecipe.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("meta_train")
    dirs = get_corpus("commonvoice")(make_release(tmp / "cv", "cv-21.0"), tmp / "data", splits=("train", "dev"))
    for path in dirs.values():
        compute_feats(path, nj=1, progress=False)
    return dirs["de/train"], dirs["de/dev"]


def arguments(data, exp_dir, steps=12):
    train, dev = data
    return ["meta-train", "--exp-dir", str(exp_dir), f"data.train=[{train}]", f"data.held_out=[{dev}]",
            "data.group_by=spk", "algorithm=fomaml", f"train.steps={steps}", "train.tasks_per_batch=2",
            "train.support_seconds=0.4", "train.query_seconds=0.4", "train.eval_every=4", "train.eval_batches=1",
            "train.meta_lr=0.01", "checkpoint_every=2", "keep_checkpoints=2", "model.conv_channels=4",
            "model.d_model=16", "model.gru_hidden=8", "model.gru_layers=1"]


def final_params(exp_dir):
    model, _, _ = load_model(exp_dir / "final.pt")
    return {n: p.detach() for n, p in model.params.items()}


def test_an_experiment_dir_holds_config_command_versions_metrics_and_model(data, tmp_path, capsys):
    exp = tmp_path / "exp"
    assert main(arguments(data, exp) + ["tensorboard=true"]) == 0
    assert "12 steps" in capsys.readouterr().out
    for name in ("config.yaml", "cmd", "versions.json", "tokens.txt", "metrics.jsonl", "final.pt", "loss.png"):
        assert (exp / name).exists(), name
    assert "train.steps=12" in (exp / "cmd").read_text()
    assert json.loads((exp / "versions.json").read_text())["packages"]["torch"].split("+")[0] == \
        torch.__version__.split("+")[0]
    records = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(13))
    assert sorted(p.name for p in (exp / "ckpt").glob("*.pt")) == ["ckpt-00000010.pt", "ckpt-00000012.pt"]
    events = EventAccumulator(str(exp / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([r["loss"] for r in records[1:]], rel=1e-6)
    # the same command again resumes from the last checkpoint: nothing left to do, the same results
    before = final_params(exp)
    assert main(arguments(data, exp)) == 0
    assert all(torch.equal(before[n], p) for n, p in final_params(exp).items())
    # more steps go on from the end; another config in the same directory moves the earlier run aside
    assert main(arguments(data, exp, steps=14)) == 0
    assert len((exp / "metrics.jsonl").read_text().splitlines()) == 15
    capsys.readouterr()
    assert main(arguments(data, exp, steps=2) + ["train.meta_lr=0.02"]) == 0
    assert f"moved it to {exp}.prev" in capsys.readouterr().err
    assert len((exp / "metrics.jsonl").read_text().splitlines()) == 3
    assert len((exp.parent / f"{exp.name}.prev" / "metrics.jsonl").read_text().splitlines()) == 15


def newest_checkpoint(exp_dir) -> int:
    steps = [int(p.stem.split("-")[1]) for p in (exp_dir / "ckpt").glob("ckpt-*.json")]
    return max(steps, default=0)


def test_killed_three_times_and_resumed_equals_the_uninterrupted_run(data, tmp_path):
    """SIGKILL at two random moments and once inside a checkpoint write; each rerun resumes. The final
    parameters equal the uninterrupted run's to 1e-6 and the metrics lines are the same."""
    steps = 120  # about 1.5 s of training: every kill lands well before the end
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert main(arguments(data, reference, steps)) == 0
    rng = random.Random()
    command = [sys.executable, "-c", KILLABLE, *arguments(data, resumed, steps)]
    for slow in (False, True, False):
        env = {**os.environ, "SLOW_FSYNC": "1"} if slow else dict(os.environ)
        start = newest_checkpoint(resumed)
        run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            if slow and list((resumed / "ckpt").glob(".*.tmp")):
                break  # a checkpoint file is being written
            if not slow and newest_checkpoint(resumed) > start:
                time.sleep(rng.uniform(0.0, 0.1))
                break
            time.sleep(0.002)
        assert run.poll() is None, "the run ended before it could be killed"
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    assert newest_checkpoint(resumed) < steps
    assert main(arguments(data, resumed, steps)) == 0
    expected, found = final_params(reference), final_params(resumed)
    for name, value in expected.items():
        torch.testing.assert_close(found[name], value, rtol=0, atol=1e-6)
    assert metrics_without_times(resumed) == metrics_without_times(reference)


def metrics_without_times(exp_dir) -> list[dict]:
    """The metrics lines of a run but for their train_seconds (wall time, which no two runs share)."""
    records = [json.loads(line) for line in (exp_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("train_seconds" in r for r in records[1:])
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]


@pytest.mark.parametrize("change, message", [
    (["train.stpes=3"], "unknown key 'train.stpes'"),
    (["train.steps=many"], "train.steps: expected int, got 'many'"),
    (["algorithm=mamll"], "algorithm: 'mamll' is not one of"),
    (["data.held_out=[/nonexistent/dev]"], "/nonexistent/dev/feats.scp: missing; run `metarecipe compute-feats"),
    pytest.param(["device=cuda"], "device: 'cuda' needs a GPU but none is visible",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")),
    (["device=tpu:0"], "device: 'tpu:0' is not a device here"),
])
def test_bad_configs_fail_before_any_work_and_write_nothing(data, tmp_path, capsys, change, message):
    exp = tmp_path / "exp"
    start = time.perf_counter()
    assert main(arguments(data, exp) + change) == 1
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert message in err, err
    assert not exp.exists()
    print(f"failed in {seconds:.2f} s: {err.strip()}")


@pytest.fixture(scope="module")
def meta_trained(data, tmp_path_factory):
    """A metasgd run (its rates are saved beside the model) to adapt from."""
    exp = tmp_path_factory.mktemp("metasgd") / "exp"
    assert main(arguments(data, exp, steps=4) + ["algorithm=metasgd"]) == 0
    return exp


def test_adapt_uses_the_meta_learners_rule_and_writes_the_adapted_model(data, meta_trained, tmp_path, capsys):
    train, _ = data
    exp = tmp_path / "adapt"
    args = ["adapt", "--exp-dir", str(exp), f"model={meta_trained / 'final.pt'}", f"data={train}",
            "adapt.minutes=0.035", "adapt.max_steps=6", "adapt.eval_every=2"]
    assert main(args) == 0
    assert "adapted on" in capsys.readouterr().out
    model, _, info = load_model(exp / "adapted.pt")
    assert info["rule"] == "metasgd" and info["algorithm"] == "metasgd"
    # the plan is stored once, by meta-train; the adapted model is adapted again as it is, with plain sgd
    assert read_model_file(meta_trained / "final.pt").adaptation == {"rule": "metasgd", "column": None, "fresh": False}
    assert read_model_file(exp / "adapted.pt").adaptation == {"rule": "sgd", "column": None, "fresh": False}
    history = [json.loads(line) for line in (exp / "history.jsonl").read_text().splitlines()]
    assert history[0]["step"] == 0 and len(history) >= 2
    before = final_params(meta_trained)
    assert any(not torch.equal(before[n], p.detach()) for n, p in model.params.items())


@pytest.mark.parametrize("change, message", [
    (["adapt.minutes=500"], "adapt.minutes: adaptation budget of 500 min exceeds the 0.04 min of target training"),
    (["adapt.minutes=0.001"], "adapt.minutes: adaptation budget of 0.001 min: the target's utterances no longer "
                              "than the budget hold only 0.00 min"),
    (["rule=fast"], "rule: must be one of ['sgd', 'head', 'metasgd', 'input', 'pnn'], got 'fast'"),
    (["scratch=true", "rule=metasgd"], "rule: scratch training uses sgd, got 'metasgd'"),
    pytest.param(["device=cuda:0"], "device: 'cuda:0' needs a GPU but none is visible",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")),
    (["adapt.minuts=1"], "unknown key 'adapt.minuts'"),
    (["model=/nonexistent/final.pt"], "model: /nonexistent/final.pt: not a readable model file"),
])
def test_adapt_errors_come_first_and_write_nothing(data, meta_trained, tmp_path, capsys, change, message):
    train, _ = data
    exp = tmp_path / "adapt"
    args = ["adapt", "--exp-dir", str(exp), f"model={meta_trained / 'final.pt'}", f"data={train}",
            "adapt.minutes=0.03"]
    start = time.perf_counter()
    assert main(args + change) == 1
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert message in err, err
    assert not exp.exists()
    print(f"failed in {seconds:.2f} s: {err.strip()}")


@pytest.mark.parametrize("change, rule", [(["rule=pnn"], "pnn"), (["scratch=true"], "sgd")])
def test_progressive_and_scratch_adaptation_write_models_that_decode(data, meta_trained, tmp_path, change, rule):
    """pnn grows a new column beside the frozen meta-trained one; scratch starts from fresh parameters. Both model
    files load and decode."""
    train, dev = data
    exp = tmp_path / "adapt"
    args = ["adapt", "--exp-dir", str(exp), f"model={meta_trained / 'final.pt'}", f"data={train}",
            "adapt.minutes=0.035", "adapt.max_steps=4", "adapt.eval_every=2"]
    assert main(args + change) == 0
    model, _, info = load_model(exp / "adapted.pt")
    assert info["rule"] == rule and info["scratch"] == (rule == "sgd")
    before = final_params(meta_trained)
    if rule == "pnn":
        assert isinstance(model, ProgressiveCTCModel)
        for name, value in before.items():  # the source column stays frozen
            assert torch.equal(model.columns[0].params[name].detach(), value)
        assert any(n.startswith("lat") for n in model.params)
    else:
        assert isinstance(model, BatchedCTCModel)
        assert all(not torch.allclose(before[n], p.detach()) for n, p in model.params.items() if p.numel() > 8)
    assert main(["decode", str(exp / "adapted.pt"), str(dev), str(tmp_path / "decode"), "--beam", "4"]) == 0
    assert len((tmp_path / "decode" / "hyp").read_text().splitlines()) == len((dev / "text").read_text().splitlines())
