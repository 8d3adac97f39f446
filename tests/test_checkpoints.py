"""Checkpoints: atomic, verified, the last K kept; a process killed with SIGKILL mid-write loses nothing saved."""

import contextlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from metarecipe.checkpoints import CheckpointDir

WRITER = """
import os, sys, time, torch
from metarecipe.checkpoints import CheckpointDir
if sys.argv[2] == "slow":  # every fsync takes 0.2 s more, so that a kill can be aimed inside a file write
    fsync = os.fsync
    os.fsync = lambda fd: (time.sleep(0.2), fsync(fd))
ckpts = CheckpointDir(sys.argv[1], keep=2)
step = (ckpts.latest() or (0, None))[0]
while True:
    step += 1
    ckpts.save(step, {"step": step, "weights": torch.full((1_500_000,), float(step))})
"""


def state(step):
    return {"step": step, "params": {"w": torch.full((3, 4), float(step))}, "rng": torch.get_rng_state(),
            "log": [{"loss": 1.0 / step}]}


def test_round_trip_and_only_the_newest_k_are_kept(tmp_path):
    ckpts = CheckpointDir(tmp_path / "ckpt", keep=2)
    assert ckpts.latest() is None
    for step in (10, 20, 30):
        ckpts.save(step, state(step))
    assert ckpts.steps() == [20, 30]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["ckpt-00000020.json", "ckpt-00000020.pt",
                                                                     "ckpt-00000030.json", "ckpt-00000030.pt"]
    step, loaded = ckpts.latest()
    assert step == 30 and torch.equal(loaded["params"]["w"], state(30)["params"]["w"])
    assert loaded["log"] == [{"loss": 1.0 / 30}]


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "SHA-256 differs"),
    (lambda p: p.with_suffix(".json").unlink(), "no marker"),
    (lambda p: p.with_suffix(".json").write_text("{"), "unreadable marker"),
])
def test_a_corrupt_newest_checkpoint_is_reported_and_skipped(tmp_path, damage, reason):
    ckpts = CheckpointDir(tmp_path, keep=3)
    ckpts.save(1, state(1))
    ckpts.save(2, state(2))
    damage(ckpts.path(2))
    with pytest.warns(UserWarning, match=f"ckpt-00000002.pt: corrupt checkpoint: .*{reason}"):
        step, loaded = ckpts.latest()
    assert step == 1 and loaded["step"] == 1
    with pytest.raises(ValueError, match=reason):
        ckpts.load(2)


def test_sigkill_at_random_moments_leaves_a_complete_checkpoint(tmp_path):
    """A writer saving 6 MB checkpoints in a loop (resuming from the newest) is killed three times: twice at
    random moments, once while a file is half-way through its write (a temp file exists, with slowed fsync).
    Each time the newest complete checkpoint loads and holds its own step, and the next run goes on from it."""
    rng = random.Random()
    ckpts = CheckpointDir(tmp_path, keep=2)
    last = 0
    for mode in ("random", "slow", "random"):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), mode])
        deadline = time.monotonic() + 60
        while (ckpts.steps() or [0])[-1] <= last + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        if mode == "slow":
            while not list(tmp_path.glob(".*.tmp")) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert list(tmp_path.glob(".*.tmp")), "the writer never started a write"
        else:
            time.sleep(rng.uniform(0.0, 0.3))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        newest_broken = ckpts.verify(ckpts.steps()[-1]) is not None
        with pytest.warns(UserWarning) if newest_broken else contextlib.nullcontext():
            step, loaded = ckpts.latest()
        assert step > last and loaded["step"] == step
        assert torch.equal(loaded["weights"], torch.full((1_500_000,), float(step)))
        last = step

