"""The training loop end to end on tiny data: resume after a real kill gives the same weights as an
uninterrupted run; a 2-process DDP run trains and keeps ranks in sync."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from objdisc.train import checkpoint

from ..conftest import tiny_params


def prepare(tmp_path, synth_shards, **overrides):
    """A project folder with tiny params and the session's converted shards in place."""
    shards, index_path = synth_shards
    params = tiny_params(tmp_path, **overrides)
    (tmp_path / "data/shards").mkdir(parents=True)
    (tmp_path / "data/index").mkdir(parents=True)
    shutil.copytree(shards, tmp_path / "data/shards/synth")
    shutil.copy(index_path, tmp_path / "data/index/synth.json")
    return params


def objdisc(*args, cwd, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "objdisc", *args], cwd=cwd, env=env, **kwargs)


def weights(path: Path) -> dict:
    return checkpoint.load(path)["state_dict"]


def test_resume_after_kill_matches_uninterrupted(tmp_path, synth_shards):
    steps = {"train__steps": 12, "train__checkpoint_every": 4, "train__val_every": 100}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for d in (whole, killed):
        d.mkdir()
        prepare(d, synth_shards, **steps)
    assert objdisc("train", cwd=whole).wait(timeout=300) == 0

    proc = objdisc("train", cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "data/runs/synth/slot_attention/checkpoints/last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and checkpoint.load(ckpt)["step"] >= 4:
            proc.send_signal(signal.SIGKILL)  # no clean-up: the process dies mid-training
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (killed / "data/runs/synth/slot_attention/model.pt").exists()
    step_at_kill = checkpoint.load(ckpt)["step"]
    assert 4 <= step_at_kill < 12

    assert objdisc("train", cwd=killed).wait(timeout=300) == 0
    a = weights(whole / "data/runs/synth/slot_attention/model.pt")
    b = weights(killed / "data/runs/synth/slot_attention/model.pt")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    # DVCLive kept one history: the resumed run continued the step numbering.
    loss = (killed / "data/runs/synth/slot_attention/live/plots/metrics/train/loss.tsv").read_text().split()
    assert loss[-2] == "12"


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path, synth_shards):
    prepare(tmp_path, synth_shards, train__steps=4)
    assert objdisc("train", cwd=tmp_path).wait(timeout=300) == 0
    ckpt = tmp_path / "data/runs/synth/slot_attention/checkpoints/last.pt"
    assert checkpoint.load(ckpt)["step"] == 4
    out = objdisc("train", "--set", "models.slot_attention.num_slots=3", cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    stdout, _ = out.communicate(timeout=300)
    assert out.returncode == 0 and "different run configuration" in stdout
    assert checkpoint.load(tmp_path / "data/runs/synth/slot_attention/model.pt")["config"]["num_slots"] == 3


@pytest.mark.slow
def test_ddp_training_on_two_processes(tmp_path, synth_shards):
    prepare(tmp_path, synth_shards, train__steps=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "objdisc", "train"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    state = checkpoint.load(tmp_path / "data/runs/synth/slot_attention/checkpoints/last.pt")
    assert state["step"] == 4 and isinstance(state["rng"], list) and len(state["rng"]) == 2
    assert (tmp_path / "data/runs/synth/slot_attention/model.pt").exists()
