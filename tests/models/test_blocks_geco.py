"""GECO: β falls while the reconstruction constraint is violated (its multiplier 1/β grows),
rises ×speedup faster once it is met, holds during the warm start, and lives in the state dict."""

import math

import pytest
import torch

from objdisc.models.blocks.geco import GECO


def test_beta_moves_against_the_constraint():
    geco = GECO(goal=10.0, step_size=0.01, alpha=0.0, speedup=10.0)
    geco.update(15.0, step=0)  # error above the goal: violated, β shrinks by exp(0.01 · −5)
    assert float(geco.beta) == pytest.approx(math.exp(-0.05))
    geco.update(8.0, step=1)  # met: β grows, ten times faster
    assert float(geco.beta) == pytest.approx(math.exp(-0.05) * math.exp(10 * 0.01 * 2.0))
    kl = torch.tensor(3.0, requires_grad=True)
    loss = geco.loss(torch.tensor(8.0), kl)
    loss.backward()
    assert float(kl.grad) == pytest.approx(float(geco.beta))  # β scales the KL, no gradient into β


def test_moving_average_warm_start_clamp_and_state():
    geco = GECO(goal=0.0, step_size=1.0, alpha=0.5, beta_min=0.1, warm_start=2)
    geco.update(4.0, step=0)
    geco.update(2.0, step=1)
    assert float(geco.err_ema) == pytest.approx(3.0) and float(geco.beta) == 1.0  # warm start: β held
    geco.update(2.0, step=2)
    assert float(geco.err_ema) == pytest.approx(2.5)
    assert float(geco.beta) == pytest.approx(0.1)  # exp(−2.5) clamped at beta_min
    copy = GECO(goal=0.0, step_size=1.0, alpha=0.5, beta_min=0.1, warm_start=2)
    copy.load_state_dict(geco.state_dict())
    assert set(geco.state_dict()) == {"beta", "err_ema", "started"}
    assert float(copy.beta) == float(geco.beta) and bool(copy.started)
