"""SPACE: parameter parity with the reference configuration, two optimisers (RMSprop foreground,
Adam background, constant rates), annealed priors and the boundary-loss switch, output invariants
(presence in [0, 1], masks ≥ 0 with Σ = α_map ≤ 1 inside the boxes), and overfitting one batch."""

from __future__ import annotations

import torch

from objdisc.config import TrainConfig
from objdisc.models.space import PRESETS, SPACE, SPACEConfig
from objdisc.train.optim import Optimisation
from objdisc.train.schedule import Anneal

from .scenes import squares


def tiny(**overrides) -> SPACEConfig:
    kwargs = {
        "image_size": 32, "grid": 4, "glimpse_size": 8, "width": 0.125, "fg_enc_dim": 8, "z_what_dim": 4, "bg_enc_dim": 8, "z_mask_dim": 4,
        "z_comp_dim": 4, "rnn_hidden": 8, "comp_prior_hidden": 8, "comp_decoder_hidden": 4, "bg_components": 2, "bg_decode_size": 8,
    }  # fmt: skip
    kwargs.update(overrides)
    return SPACEConfig(**kwargs)




def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_reference():
    with torch.device("meta"):
        model = SPACE(PRESETS["benchmark"])
    assert n_params(model.foreground) == 2_357_167
    assert n_params(model.background) == 2_950_484
    assert n_params(model) == 5_307_651


def test_two_optimisers_with_constant_reference_rates():
    model = SPACE(tiny())
    cfg = SPACEConfig()
    assert (cfg.fg_lr, cfg.bg_lr) == (1e-5, 1e-3)
    specs = model.optimizers(TrainConfig())
    assert [s.name for s in specs] == ["rmsprop", "adam"]
    assert {id(p) for p in specs[0].groups[0].params} == {id(p) for p in model.foreground.parameters()}
    assert {id(p) for p in specs[1].groups[0].params} == {id(p) for p in model.background.parameters()}
    opt = Optimisation(specs, TrainConfig(warmup_steps=100, decay_steps=10), model)  # train schedule ignored
    for step in (0, 50, 5000):
        opt.set_lr(step)
        assert opt.lrs() == {"lr/fg": model.cfg.fg_lr, "lr/bg": model.cfg.bg_lr}
    assert isinstance(opt.optimizers[0], torch.optim.RMSprop) and isinstance(opt.optimizers[1], torch.optim.Adam)


def test_outputs_and_invariants():
    torch.manual_seed(0)
    model = SPACE(tiny()).train()
    image = squares(3, 32)
    out = model({"image": image}, step=0)
    n = 16
    assert out.recon.shape == (3, 3, 32, 32) and out.masks.shape == (3, n, 32, 32)
    assert out.masks_have_background is False and out.presence.shape == (3, n) and out.boxes.shape == (3, n, 4)
    assert out.slot_rgb is None and model.eval()({"image": image}).slot_rgb.shape == (3, n, 3, 32, 32)
    assert (out.presence > 0).all() and (out.presence < 1).all()
    assert (out.masks >= 0).all()
    torch.testing.assert_close(out.masks.sum(1), out.extras["alpha"][:, 0])  # shares of α_map
    assert (out.masks.sum(1) <= 1 + 1e-5).all()
    assert (out.recon >= 0).all() and (out.recon <= 1).all()
    assert (out.boxes >= 0).all() and (out.boxes <= 32).all()
    expected = {"nll", "kl_what", "kl_where", "kl_pres", "kl_depth", "kl_bg_mask", "kl_bg_comp", "boundary"}
    assert expected <= set(out.losses) and all(torch.isfinite(v) for v in out.losses.values())
    total = sum(out.losses[k] for k in expected)
    torch.testing.assert_close(out.loss, total)
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    for b in range(3):
        for k in range(n):
            x0, y0, x1, y1 = out.boxes[b, k].tolist()
            m = max(x1 - x0, y1 - y0) / 8 / 2 + 0.5  # half a glimpse pixel of bilinear bleed
            outside = (xs < x0 - m) | (xs > x1 + m) | (ys < y0 - m) | (ys > y1 + m)
            assert out.masks[b, k][outside].max() < 1e-6


def test_annealed_priors_and_boundary_switch():
    cfg = SPACEConfig()
    assert cfg.presence_prior == Anneal.linear(0.1, 0.01, 4000, 10000)
    assert cfg.scale_prior_mean == Anneal.linear(-1.0, -2.0, 10000, 20000)
    model = SPACE(tiny(boundary_off_step=15_000)).train()
    image = squares(2, 32)
    cases = {0: (0.1, -1.0), 4000: (0.1, -1.0), 7000: (0.055, -1.0), 10_000: (0.01, -1.0), 15_000: (0.01, -1.5), 20_000: (0.01, -2.0)}
    for step, (pres, scale) in cases.items():
        torch.manual_seed(0)
        out = model({"image": image}, step=step)
        assert abs(float(out.losses["presence_prior"]) - pres) < 1e-6
        assert abs(float(out.losses["scale_prior_mean"]) - scale) < 1e-6
        boundary = float(out.losses["boundary"])
        assert (boundary == 0) == (step > 15_000), (step, boundary)
    # the presence prior enters the KL: a smaller prior probability gives a different KL
    torch.manual_seed(0)
    a = model({"image": image}, step=0).losses["kl_pres"]
    torch.manual_seed(0)
    b = model({"image": image}, step=10_000).losses["kl_pres"]
    assert a != b


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = SPACE(tiny()).train()
    image = squares(4, 32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        out = model({"image": image}, step=step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
