"""MONet: parameter parity with the ClevrTex benchmark, the stick-breaking attention, the loss
terms, and that it learns a fixed batch."""

from __future__ import annotations

import pytest
import torch

from objdisc.models import MODELS
from objdisc.models.blocks.mixture import mixture_nll
from objdisc.models.monet import MONet, MONetConfig, PRESETS

from .scenes import squares




def tiny(**kw) -> MONetConfig:
    base = dict(image_size=16, num_slots=3, unet_blocks=0, unet_channels=8, unet_mlp=32, z_dim=8,
                encoder_channels=(8, 8), encoder_hidden=32, decoder_channels=16, decoder_layers=2)
    return MONetConfig(**{**base, **kw})


def test_parameter_count_matches_the_benchmark():
    with torch.device("meta"):
        model = MONet(PRESETS["benchmark"])
    assert sum(p.numel() for p in model.parameters()) == 22_161_765
    assert sum(p.numel() for p in model.attention.parameters()) == 21_005_761
    assert MODELS["monet"].presets["benchmark"] == MONetConfig()


def test_masks_are_the_stick_breaking_of_the_attention():
    torch.manual_seed(0)
    model = MONet(tiny(num_slots=4))
    image = squares(2, 16)
    log_masks = model.attend(image)  # [B,K,1,H,W]
    torch.testing.assert_close(log_masks.exp().sum(1), torch.ones(2, 1, 16, 16))
    # m_1 = α(x, s_0 = 1); m_2 = (1 − α_1) α(x, s_1); the last is the remaining scope.
    log_a1, log_na1 = model.attention(image, torch.zeros(2, 1, 16, 16))
    torch.testing.assert_close(log_masks[:, 0], log_a1)
    log_a2, log_na2 = model.attention(image, log_na1)
    torch.testing.assert_close(log_masks[:, 1], log_na1 + log_a2)
    out = model({"image": image})
    torch.testing.assert_close(out.masks.sum(1), torch.ones(2, 16, 16))
    assert out.masks_have_background and out.slot_rgb.shape == (2, 4, 3, 16, 16)
    torch.testing.assert_close(out.recon, (out.masks.unsqueeze(2) * out.slot_rgb).sum(1).clamp(0, 1))


def test_loss_is_mixture_nll_plus_weighted_kls_with_a_background_sigma():
    torch.manual_seed(0)
    cfg = tiny(component="pixel")
    model = MONet(cfg)
    image = squares(2, 16)
    out = model({"image": image})
    expected = out.losses["nll"] + cfg.beta * out.losses["kl_z"] + cfg.gamma * out.losses["kl_mask"]
    torch.testing.assert_close(out.loss.detach(), expected)
    assert model.pixel_std.tolist() == pytest.approx([0.09, 0.15, 0.15])
    # The NLL is the mixture under the attention masks, σ 0.09 for slot 0 and 0.15 for the others.
    log_masks = out.masks.clamp_min(1e-30).log()
    nll, _ = mixture_nll(image, out.slot_rgb, log_masks, torch.tensor([0.09, 0.15, 0.15]), "pixel")
    torch.testing.assert_close(nll.mean(), out.losses["nll"], rtol=1e-4, atol=1e-2)
    assert float(out.losses["kl_mask"]) >= 0 and float(out.losses["kl_z"]) >= 0


def test_every_parameter_gets_a_gradient_and_eval_needs_none():
    torch.manual_seed(0)
    model = MONet(tiny())
    out = model({"image": squares(2, 16)})
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model({"image": squares(2, 16)}).loss)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = MONet(tiny(component="pixel"))
    image = squares(4, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        out = model({"image": image})
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
