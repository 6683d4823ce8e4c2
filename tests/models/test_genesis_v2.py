"""GENESIS-v2: parameter parity with the ClevrTex benchmark, the IC-SBP (masks sum to one, seeds
inside the scope, semi-convolutional embeddings start as coordinates), the causal autoregressive
prior, GECO's scaling and behaviour through ``after_step``, and that it learns a fixed batch."""

from __future__ import annotations

import pytest
import torch

from objdisc.models import MODELS
from objdisc.models.genesis_v2 import GenesisV2, GenesisV2Config, PRESETS, encoder_widths

from .scenes import squares




def tiny(**kw) -> GenesisV2Config:
    return GenesisV2Config(**{**dict(image_size=32, num_slots=4, feat_dim=16), **kw})


def test_parameter_count_matches_the_benchmark():
    with torch.device("meta"):
        model = GenesisV2(PRESETS["benchmark"])
    assert sum(p.numel() for p in model.parameters()) == 2_840_270
    assert PRESETS["benchmark"].blocks == 6 and encoder_widths(6, 64) == [64, 64, 64, 128, 128, 128]
    assert MODELS["genesis_v2"].presets["benchmark"] == GenesisV2Config()


def test_geco_goal_and_step_scale_with_the_image():
    with torch.device("meta"):
        model = GenesisV2(GenesisV2Config())
    assert model.geco.goal == pytest.approx(0.5655 * 3 * 128 * 128)  # ≈ 27,795
    assert model.geco.step_size == pytest.approx(2.5e-6)
    assert model.geco.speedup == 10.0 and model.geco.alpha == 0.99 and model.geco.beta_min == 1e-10


def test_icsbp_masks_sum_to_one_and_start_from_coordinates():
    torch.manual_seed(0)
    model = GenesisV2(tiny())
    features = torch.randn(2, 16, 32, 32)
    zeta = model.icsbp.embeddings(features)
    # The gate starts at 0: the embedding is the pixel coordinates in its last two channels.
    assert float(model.icsbp.gate.detach()) == 0.0
    torch.testing.assert_close(zeta[:, :-2], torch.zeros(2, 6, 32, 32))
    torch.testing.assert_close(zeta[0, -2, 0], torch.linspace(-1, 1, 32))
    with torch.no_grad():
        log_masks, _ = model.icsbp(features)
    assert log_masks.shape == (2, 4, 1, 32, 32)
    torch.testing.assert_close(log_masks.exp().sum(1), torch.ones(2, 1, 32, 32))
    # α is clamped to [0.01, 0.99]: the first mask is within those bounds everywhere.
    first = log_masks[:, 0].exp()
    assert float(first.min()) >= 0.01 - 1e-6 and float(first.max()) <= 0.99 + 1e-6
    # Masks are spatial blobs around their seeds with coordinate embeddings: each peaks at 0.99.
    assert torch.allclose(first.flatten(1).max(1).values, torch.full((2,), 0.99))


def test_autoregressive_prior_is_causal():
    torch.manual_seed(0)
    model = GenesisV2(tiny())
    z = torch.randn(2, 4, 16)
    mu, std = model.prior(z)
    torch.testing.assert_close(mu[:, 0], torch.zeros(2, 16))
    torch.testing.assert_close(std[:, 0], torch.ones(2, 16))
    changed = z.clone()
    changed[:, 2] += 1.0
    mu2, std2 = model.prior(changed)
    torch.testing.assert_close(mu2[:, :3], mu[:, :3])  # p(z_k | z_<k) ignores z_k and later
    assert not torch.allclose(mu2[:, 3], mu[:, 3])
    assert float(std.detach().min()) > 1e-4


def test_outputs_losses_and_geco_through_after_step():
    torch.manual_seed(0)
    model = GenesisV2(tiny(geco_goal=0.0))  # a goal the error is above: β must fall
    image = squares(2, 32)
    out = model({"image": image})
    torch.testing.assert_close(out.masks.sum(1), torch.ones(2, 32, 32))
    assert out.masks_have_background and out.slot_rgb.shape == (2, 4, 3, 32, 32)
    assert out.extras["attention_masks"].shape == (2, 4, 32, 32)
    beta = out.losses["geco_beta"].to(out.loss.dtype)
    torch.testing.assert_close(out.loss.detach(), out.losses["nll"] + beta * (out.losses["kl"] + out.losses["kl_masks"]))
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    beta0 = float(model.geco.beta)
    model.eval()
    with torch.no_grad():
        model({"image": image})
    assert float(model.geco.beta) == beta0  # evaluation never moves β
    model.after_step(0, out)
    assert float(model.geco.beta) < beta0
    assert {"geco.beta", "geco.err_ema", "geco.started"} <= set(model.state_dict())


def test_masks_kl_ties_the_decoder_masks_to_the_icsbp():
    """The paper's KL(q(m | x) ‖ p(m | z)) between the IC-SBP masks and the decoder's masks is in
    the loss, with its known value, and it alone sends gradient into the decoder's mask logits."""
    torch.manual_seed(0)
    model = GenesisV2(tiny())
    image = squares(2, 32)
    out = model({"image": image})
    q, p = out.extras["attention_masks"].double(), out.masks.double()
    expected = (q * (q.log() - p.log())).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(out.losses["kl_masks"].double(), expected, rtol=1e-4, atol=1e-3)
    assert float(out.losses["kl_masks"]) > 0.0  # the decoder's masks start uniform, the IC-SBP's do not

    # With the reconstruction and the latents' KL taken out, the masks' KL still trains the decoder's
    # mask channel: the gradient of the last layer's mask output row is not zero.
    model.zero_grad()
    (out.loss - out.losses["nll"] - model.geco.beta.float() * out.losses["kl"]).backward()
    mask_row = model.decoder.convs[-1].weight.grad[3]  # [4, C, 1, 1]: output 3 is the mask logit
    assert float(mask_row.abs().sum()) > 0.0


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = GenesisV2(tiny(component="pixel", image_size=16, num_slots=3))
    image = squares(4, 16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    errors = []
    for step in range(40):
        out = model({"image": image})
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.after_step(step, out)
        errors.append(float(((out.recon - image) ** 2).mean()))
    assert sum(errors[-5:]) / 5 < 0.5 * errors[0], errors
