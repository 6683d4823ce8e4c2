"""The model protocol end to end: a model that asks for two optimisers, a frozen start, a
reduce-on-plateau, an annealed loss weight and a GECO multiplier trains through the one loop, is
killed mid-run, resumes, and ends bit-identical to an uninterrupted run."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from objdisc.config import TrainConfig
from objdisc.train import checkpoint
from objdisc.train.optim import Optimisation, OptimizerSpec, ParamGroup, Plateau

from ..conftest import ROOT, tiny_params
from .toy_model import Toy, ToyConfig

SCRIPT = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.train.toy_model import register
register()
from objdisc import pipeline
from objdisc.config import load_params
pipeline.train(load_params("params.yaml"), progress=False)
"""


def toy_project(tmp_path, synth_shards, **overrides):
    shards, index_path = synth_shards
    params = tiny_params(tmp_path, **overrides)
    raw = yaml.safe_load(params.read_text())
    raw["model"] = "toy"
    raw["models"]["toy"] = {}
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copytree(shards, tmp_path / "data/shards/synth")
    (tmp_path / "data/index").mkdir(parents=True)
    shutil.copy(index_path, tmp_path / "data/index/synth.json")
    (tmp_path / "train_toy.py").write_text(SCRIPT)


def start(cwd, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "train_toy.py"], cwd=cwd, env=env, **kwargs)


def test_toy_model_killed_and_resumed_is_bit_identical(tmp_path, synth_shards):
    steps = {"train__steps": 12, "train__checkpoint_every": 4, "train__val_every": 2, "train__log_every": 1}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for d in (whole, killed):
        d.mkdir()
        toy_project(d, synth_shards, **steps)
    assert start(whole).wait(timeout=300) == 0

    proc = start(killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "data/runs/synth/toy/checkpoints/last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and checkpoint.load(ckpt)["step"] >= 4:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert 4 <= checkpoint.load(ckpt)["step"] < 12
    assert start(killed).wait(timeout=300) == 0

    a = checkpoint.load(whole / "data/runs/synth/toy/checkpoints/last.pt")
    b = checkpoint.load(ckpt)
    for name in a["model"]:  # weights and buffers: GECO's β and its moving average
        torch.testing.assert_close(a["model"][name], b["model"][name], rtol=0, atol=0, msg=name)
    assert a["optimisation"]["plateaus"] == b["optimisation"]["plateaus"]
    assert a["optimisation"]["plateaus"][1]["scale"] < 1.0  # the plateau did cut the decoder's rate
    assert float(a["model"]["geco.beta"]) != 1.0  # and GECO did move
    for x, y in zip(a["optimisation"]["optimizers"], b["optimisation"]["optimizers"]):
        for key in x["state"]:
            for k in x["state"][key]:
                torch.testing.assert_close(x["state"][key][k], y["state"][key][k], rtol=0, atol=0)
    wa, wb = (checkpoint.load(d / "data/runs/synth/toy/model.pt")["state_dict"] for d in (whole, killed))
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=0, msg=name)


def test_optimisation_groups_frozen_start_and_rates():
    torch.manual_seed(0)
    model = Toy(ToyConfig(resolution=4))
    train = TrainConfig(lr=0.1, warmup_steps=2, decay_steps=0)
    optim = Optimisation(model.optimizers(train), train, model)
    assert [type(o).__name__ for o in optim.optimizers] == ["RMSprop", "Adam"]
    frozen = [p.detach().clone() for p in model.decoder.parameters()]
    x = {"image": torch.rand(2, 3, 4, 4)}
    for step in range(4):
        optim.zero_grad()
        model(x, step=step).loss.backward()
        optim.step(step)
        rates = optim.lrs()
        # encoder: absolute 1e-3, warm-up of the train block; decoder: 2 × train.lr, same warm-up
        assert rates["lr/encoder"] == pytest.approx(1e-3 * min(1, step / 2))
        assert rates["lr/decoder"] == pytest.approx(0.2 * min(1, step / 2))
        if step < 3:  # frozen: untouched, and no optimiser state collected
            assert all(torch.equal(p, q) for p, q in zip(model.decoder.parameters(), frozen))
            assert not optim.optimizers[1].state
    assert not all(torch.equal(p, q) for p, q in zip(model.decoder.parameters(), frozen))


def test_plateau_cuts_the_rate_after_patience_and_survives_a_round_trip():
    p = torch.nn.Parameter(torch.zeros(1))
    train = TrainConfig(lr=1.0, warmup_steps=0, decay_steps=0)
    spec = OptimizerSpec([ParamGroup([p])], plateau=Plateau("mse", factor=0.5, patience=1, min_lr=0.3))
    optim = Optimisation([spec], train)
    for value, expected in ((1.0, 1.0), (0.9, 1.0), (0.95, 1.0), (0.95, 0.5), (0.95, 0.5), (0.95, 0.3)):
        optim.on_validation({"mse": value})
        optim.set_lr(0)
        assert optim.lrs()["lr"] == pytest.approx(expected)
    state = optim.state_dict()
    again = Optimisation([OptimizerSpec([ParamGroup([p])], plateau=Plateau("mse", factor=0.5, patience=1, min_lr=0.3))], train)
    again.load_state_dict(state)
    again.set_lr(0)
    assert again.lrs() == optim.lrs()
    with pytest.raises(ValueError, match="watches 'mse'"):
        optim.on_validation({"loss": 1.0})


def test_every_trainable_parameter_is_in_exactly_one_group():
    model = Toy(ToyConfig(resolution=4))
    train = TrainConfig()
    with pytest.raises(ValueError, match="in no optimiser group"):
        Optimisation([OptimizerSpec([ParamGroup(list(model.encoder.parameters()))])], train, model)
    with pytest.raises(ValueError, match="already in another group"):
        Optimisation([OptimizerSpec([ParamGroup(list(model.parameters())), ParamGroup(list(model.encoder.parameters()))])], train)
    with pytest.raises(ValueError, match="unknown optimiser"):
        Optimisation([OptimizerSpec([ParamGroup(list(model.parameters()))], name="lamb")], train)
