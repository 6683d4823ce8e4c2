"""Efficient-MORL: parameter parity with the ClevrTex benchmark, the refinement curriculum and its
loss weights, the reversed hierarchical prior, the DualGRU, GECO's warm start through ``after_step``,
evaluation without outer gradients, and that it learns a fixed batch."""

from __future__ import annotations

import pytest
import torch

from objdisc.models import MODELS
from objdisc.models.emorl import DualGRU, EfficientMORL, EMORLConfig, PRESETS

from .scenes import squares




def tiny(**kw) -> EMORLConfig:
    base = dict(image_size=16, num_slots=3, z_dim=8, hidden=8, decoder_channels=8, decoder_layers=2, geco_warm_start=2, geco_goal=-100.0)
    return EMORLConfig(**{**base, **kw})


def test_parameter_count_matches_the_benchmark():
    with torch.device("meta"):
        model = EfficientMORL(PRESETS["benchmark"])
    n = sum(p.numel() for p in model.parameters())
    # 666,502 in the reference, whose GECO moving average and multiplier are two (gradient-free)
    # parameters; here they are buffers.
    assert n == 666_502 - 2
    assert MODELS["emorl"].presets["benchmark"] == EMORLConfig()
    assert EMORLConfig().image_size == 96


def test_refinement_curriculum_and_loss_weights():
    cfg = EMORLConfig()
    assert [cfg.refinement_iters(s) for s in (0, 99_999, 100_000, 400_000)] == [3, 3, 1, 1]
    torch.manual_seed(0)
    model = EfficientMORL(tiny(refinement_curriculum=((0, 3), (10, 1))))
    image = squares(2, 16)
    for step, iters in ((0, 3), (10, 1)):
        out = model({"image": image}, step=step)
        keys = sorted(k for k in out.losses if k.startswith("loss_i"))
        assert keys == [f"loss_i{i}" for i in range(iters + 1)]
        # Earlier iterations weigh more: (R + 3 − i) / (R + 1).
        expected = sum((iters + 3 - i) / (iters + 1) * out.losses[f"loss_i{i}"] for i in range(iters + 1))
        torch.testing.assert_close(out.loss.detach(), expected)
    torch.testing.assert_close(out.masks.sum(1), torch.ones(2, 16, 16))


def test_dual_gru_is_two_independent_cells():
    torch.manual_seed(0)
    gru = DualGRU(4, 4, init="pytorch")
    u, mu, var = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    mu1, var1 = gru(u, mu, var)
    mu2, var2 = gru(u, mu, var + 1.0)
    torch.testing.assert_close(mu1, mu2)  # the mean's cell never sees the variance state
    assert not torch.allclose(var1, var2)
    normal = DualGRU(64, 64, init="normal")
    assert 0.9 < float(normal.mean.weight_hh.detach().std()) < 1.1  # the reference's N(0, 1) draw


def test_hierarchical_kl_uses_the_reversed_prior():
    """With one stochastic layer the prior is N(0, I); with three, the lower layers' KL terms go
    through the conditional prior network (it gets a gradient) and the top one does not."""
    torch.manual_seed(0)
    image = squares(2, 16)
    one = EfficientMORL(tiny(stochastic_layers=1, refinement_curriculum=((0, 0),)))
    one({"image": image}).loss.backward()
    assert all(p.grad is None for p in one.prior.parameters())
    three = EfficientMORL(tiny(stochastic_layers=3, refinement_curriculum=((0, 0),)))
    three({"image": image}).loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in three.prior.parameters())


def test_geco_warm_start_then_multiplier_on_the_reconstruction():
    torch.manual_seed(0)
    model = EfficientMORL(tiny(refinement_curriculum=((0, 0),), geco_goal=-10000.0, geco_step=1e-3))
    image = squares(2, 16)
    out = model({"image": image}, step=0)
    torch.testing.assert_close(out.loss.detach(), 3.0 * (out.losses["nll"] + out.losses["kl"]))  # ELBO, weight (0+3)/1
    model.after_step(0, out)
    model.after_step(1, out)
    assert not bool(model.geco.started)
    out = model({"image": image}, step=2)
    lam = float(model.geco.multiplier)
    torch.testing.assert_close(out.loss.detach(), 3.0 * (out.losses["kl"] + lam * (out.losses["nll"] + 10000.0)))
    model.after_step(2, out)
    model.after_step(3, out)  # the NLL is far above the goal −10000 (unreachable at 16²): λ grows
    assert float(model.geco.multiplier) > lam
    assert {"geco.beta", "geco.err_ema", "geco.started"} <= set(model.state_dict())


def test_evaluation_runs_without_outer_gradients_and_matches_training():
    torch.manual_seed(0)
    model = EfficientMORL(tiny(refinement_curriculum=((0, 2),)))
    image = squares(2, 16)
    torch.manual_seed(1)
    train_out = model({"image": image}, step=5)
    model.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        eval_out = model({"image": image}, step=5)
    assert not eval_out.loss.requires_grad
    torch.testing.assert_close(eval_out.loss, train_out.loss.detach(), rtol=1e-5, atol=1e-2)
    torch.testing.assert_close(eval_out.recon, train_out.recon, rtol=1e-5, atol=1e-5)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = EfficientMORL(tiny(refinement_curriculum=((0, 1),)))
    model({"image": squares(2, 16)}, step=0).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = EfficientMORL(tiny(refinement_curriculum=((0, 1),), init_gain=1.0, gru_init="pytorch", geco=False))
    image = squares(4, 16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    errors = []
    for step in range(40):
        out = model({"image": image}, step=step)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        errors.append(float(((out.recon - image) ** 2).mean()))
    assert sum(errors[-5:]) / 5 < 0.6 * errors[0], errors


@pytest.mark.parametrize("likelihood", ["gaussian", "mixture"])
def test_likelihoods(likelihood):
    torch.manual_seed(0)
    model = EfficientMORL(tiny(likelihood=likelihood, refinement_curriculum=((0, 0),)))
    out = model({"image": squares(2, 16)})
    assert torch.isfinite(out.loss)
