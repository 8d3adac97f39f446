"""torchrun with gloo on this machine: the shared meta-gradient equals the single-process one, and meta-train runs
resume across different numbers of processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_worker import problem
from test_meta_train_cli import arguments, data, final_params  # noqa: F401  (module fixture: real features)

from metarecipe.cli.main import main

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.mark.parametrize("algorithm", ["maml", "reptile", "metasgd"])
def test_two_processes_give_the_single_process_meta_gradient(tmp_path, algorithm):
    """5 tasks shared 3 + 2 by two processes: loss and meta-gradient equal one process's to 1e-5."""
    torchrun(2, str(HERE / "distributed_worker.py"), algorithm, str(tmp_path / "shared.pt"))
    shared = torch.load(tmp_path / "shared.pt", weights_only=True)
    algo, batch = problem(algorithm)
    loss, grads = algo.meta_gradient(batch)
    assert shared["world"] == 2
    torch.testing.assert_close(shared["loss"], loss, rtol=1e-5, atol=1e-5)
    for ours, single in zip(shared["grads"], grads, strict=True):
        torch.testing.assert_close(ours, single, rtol=1e-5, atol=1e-5)


def meta_train_under_torchrun(nproc, args):
    torchrun(nproc, "-m", "metarecipe", *args)


def test_runs_resume_with_another_number_of_processes(data, tmp_path):  # noqa: F811
    """2 processes for 6 steps then 1 for 12 (and 1 then 2) end where one process running 12 steps ends, with the
    same metrics lines (losses to 1e-5)."""
    reference = tmp_path / "reference"
    assert main(arguments(data, reference, 12)) == 0
    for first, second, name in ((2, 1, "two_then_one"), (1, 2, "one_then_two")):
        exp = tmp_path / name
        for nproc, steps in ((first, 6), (second, 12)):
            if nproc == 1:
                assert main(arguments(data, exp, steps)) == 0
            else:
                meta_train_under_torchrun(nproc, arguments(data, exp, steps))
        for param, value in final_params(reference).items():
            torch.testing.assert_close(final_params(exp)[param], value, rtol=1e-5, atol=1e-5)
        expected, found = ([{k: v for k, v in json.loads(line).items() if k != "train_seconds"}  # wall time
                            for line in (path / "metrics.jsonl").read_text().splitlines()] for path in (reference, exp))
        assert [r["step"] for r in found] == [r["step"] for r in expected] == list(range(13))
        for ours, single in zip(found, expected, strict=True):
            assert ours.keys() == single.keys() and ours == pytest.approx(single, rel=1e-5, abs=1e-5)
