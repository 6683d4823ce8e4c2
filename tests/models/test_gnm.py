"""GNM: parameter parity with the reference configuration, the likelihood-σ presets, every annealed
hyper-parameter and the background-α curriculum at given steps, output invariants (presence in
[0, 1], masks ≥ 0 with Σ ≤ 1 inside the boxes), StructDRAW's shapes, and overfitting one batch."""

from __future__ import annotations

import torch

from objdisc.models.gnm import GNM, PRESETS, GNMConfig
from objdisc.train.schedule import Anneal

from .scenes import squares


def tiny(**overrides) -> GNMConfig:
    kwargs = {
        "image_size": 32, "z_global_dim": 4, "z_what_dim": 4, "z_bg_dim": 2, "draw_steps": 2,
        "encoder_filters": (8, 8, 8), "encoder_kernels": (4, 4, 4), "encoder_strides": (2, 2, 2),
        "what_decoder_filters": (8, 8, 4), "what_decoder_kernels": (3, 3, 3), "what_decoder_upscales": (2, 2, 2),
        "bg_decoder_filters": (8, 8, 3), "bg_decoder_kernels": (1, 1, 3), "bg_decoder_upscales": (4, 8, 1),
        "global_decoder": (16, 32), "global_encoder": (16,), "bg_generator": (8,), "bg_encoder": (16,), "local_hidden": (8,),
        "rnn_hidden": 8,
    }  # fmt: skip
    kwargs.update(overrides)
    return GNMConfig(**kwargs)




def test_parameter_count_and_sigma_presets():
    with torch.device("meta"):
        model = GNM(PRESETS["benchmark"])
    assert sum(p.numel() for p in model.parameters()) == 8_636_446
    cfg = model.cfg
    assert (cfg.num_cell, cfg.glimpse_size, cfg.enc_dim) == (4, 64, 128)
    sigmas = {name: PRESETS[name].sigma for name in ("benchmark", "benchmark-clevrtex", "hhousen-clevr", "hhousen-clevrtex")}
    assert sigmas == {"benchmark": 0.2, "benchmark-clevrtex": 0.5, "hhousen-clevr": 0.4, "hhousen-clevrtex": 0.7}


def test_reference_schedules():
    cfg = GNMConfig()
    assert cfg.beta_global == Anneal.linear(0.0, 1.0, 0, 100000)
    assert cfg.tau_pres == Anneal.linear(1.0, 0.5, 1000, 20000)
    assert cfg.presence_prior == Anneal.linear(0.1, 0.001, 0, 4000)
    assert cfg.beta_aux_bg == Anneal.linear(50.0, 1.0, 0, 50000)
    assert cfg.beta_aux_where == Anneal.linear(10.0, 1.0, 0, 500)
    assert cfg.alpha_curriculum == (0, 500) and cfg.alpha_curriculum_value == 0.9


def test_annealed_values_at_given_steps_are_used():
    model = GNM(tiny()).train()
    image = squares(2, 32)
    expected = {  # step: beta_global, tau, presence prior
        0: (0.0, 1.0, 0.1),
        1000: (0.01, 1.0, 0.1 - 0.099 / 4),
        2000: (0.02, 1.0 - 0.5 * 1000 / 19000, 0.1 - 0.099 / 2),
        50_000: (0.5, 0.5, 0.001),
        200_000: (1.0, 0.5, 0.001),
    }
    for step, (beta_global, tau, prior) in expected.items():
        torch.manual_seed(0)
        out = model({"image": image}, step=step)
        got = [float(out.losses[k]) for k in ("beta_global", "tau_pres", "presence_prior")]
        torch.testing.assert_close(torch.tensor(got), torch.tensor([beta_global, tau, prior]), atol=1e-6, rtol=1e-6)
        # the loss is the likelihood plus every KL with its weight at this step
        aux_bg = 50.0 - 49.0 * min(step, 50_000) / 50_000
        aux_where = 10.0 - 9.0 * min(step, 500) / 500
        kl = sum(float(out.losses[k]) for k in ("kl_pres", "kl_where", "kl_depth", "kl_what", "kl_bg",
                                                  "kl_aux_pres", "kl_aux_depth", "kl_aux_what"))  # fmt: skip
        kl += beta_global * float(out.losses["kl_global"]) + aux_bg * float(out.losses["kl_aux_bg"])
        kl += aux_where * float(out.losses["kl_aux_where"])
        loss = out.loss.item()
        assert abs(loss - (float(out.losses["nll"]) + kl)) < 1e-3 * abs(loss)


def test_background_alpha_curriculum():
    model = GNM(tiny()).train()
    image = squares(2, 32)
    for step in (1, 250, 499):  # 0 < step < 500
        out = model({"image": image}, step=step)
        assert (out.extras["alpha"] == 0.9).all()
    for step in (0, 500):
        out = model({"image": image}, step=step)
        assert not (out.extras["alpha"] == 0.9).all()


def test_outputs_and_invariants():
    torch.manual_seed(0)
    model = GNM(tiny()).train()
    image = squares(3, 32)
    out = model({"image": image}, step=1000)
    n = 16
    assert out.recon.shape == (3, 3, 32, 32) and out.masks.shape == (3, n, 32, 32)
    assert out.slot_rgb is None  # object colours are pasted for pictures only (evaluation)
    assert model.eval()({"image": image}, step=1000).slot_rgb.shape == (3, n, 3, 32, 32)
    assert out.masks_have_background is False and out.presence.shape == (3, n) and out.boxes.shape == (3, n, 4)
    assert (out.presence >= 0).all() and (out.presence <= 1).all()
    assert (out.masks >= 0).all() and (out.masks.sum(1) <= 1 + 1e-5).all()
    assert (out.recon >= 0).all() and (out.recon <= 1).all()
    assert (out.boxes >= 0).all() and (out.boxes <= 32).all()
    assert all(torch.isfinite(v) for v in out.losses.values())
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    for b in range(3):
        for k in range(n):
            x0, y0, x1, y1 = out.boxes[b, k].tolist()
            m = max(x1 - x0, y1 - y0) / 8 / 2 + 0.5
            outside = (xs < x0 - m) | (xs > x1 + m) | (ys < y0 - m) | (ys > y1 + m)
            # A glimpse's share of the rendered α outside its box is the sampler's leakage (placed
            # α of order 1e-5 there), not a segment.
            assert out.masks[b, k][outside].max() < 1e-4


def test_masks_partition_the_rendered_alpha():
    """Σ masks is the α the renderer blends the background with (so the evaluation's background
    channel 1 − Σ masks is the rendered background weight), shared out by the depth importance,
    also where glimpses overlap."""
    torch.manual_seed(0)
    model = GNM(tiny()).eval()
    out = model({"image": squares(3, 32)}, step=1000)
    alpha = out.extras["alpha"][:, 0]
    covered = out.masks.sum(1) > 0
    torch.testing.assert_close(out.masks.sum(1)[covered], alpha[covered], atol=1e-5, rtol=1e-4)
    assert (alpha[~covered] <= 1e-5).all()
    overlap = (out.masks > 1e-3).sum(1) >= 2
    assert overlap.any()  # the check covers overlapping glimpses


def test_struct_draw_shapes_and_prior_network_is_shared():
    torch.manual_seed(0)
    model = GNM(tiny())
    enc = model.image_encoder(squares(2, 32))
    assert enc.shape == (2, 8, 4, 4)
    draw = model.struct_draw(enc)
    assert draw["z"].shape == (2, 2, 4) and draw["dec"].shape == enc.shape
    assert (draw["p_std"] > 0).all() and (draw["q_std"] > 0).all()
    # the local-latent network reads either map: one set of weights for prior and posterior
    assert model.local_latents.where.bias[0] == -1.0 and model.local_latents.where.weight.abs().max() <= 0.01


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = GNM(tiny()).train()
    image = squares(4, 32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        out = model({"image": image}, step=1000 + step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
