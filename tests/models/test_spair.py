"""SPAIR: parameter parity with the ClevrTex benchmark, the annealed count prior, output invariants
(presence in [0, 1] and hard in evaluation, masks ≥ 0 with Σ ≤ 1 inside the boxes, boxes in the
image), the plateau optimiser, and overfitting one batch."""

from __future__ import annotations

import torch

from objdisc.config import TrainConfig
from objdisc.models.spair import PRESETS, SPAIR, SPAIRConfig
from objdisc.train.optim import Optimisation
from objdisc.train.schedule import Anneal

from .scenes import squares


def tiny(**overrides) -> SPAIRConfig:
    kwargs = {
        "image_size": 32, "cell_size": 16, "backbone": (8, 8, 8, 8, 8), "backbone_groups": (4, 4, 4, 4, 4), "features": 8,
        "features_groups": 4, "anchor": 16, "glimpse_size": 8, "what_dim": 4, "passthrough": 4, "hidden": (16, 16),
        "encoder_hidden": (32,), "decoder_hidden": 8, "bg_dim": 1, "bg_encoder": (8, 8), "bg_encoder_hidden": 8, "bg_decoder_hidden": 8,
    }  # fmt: skip
    kwargs.update(overrides)
    return SPAIRConfig(**kwargs)




def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_benchmark():
    with torch.device("meta"):
        assert n_params(SPAIR(PRESETS["benchmark"])) == 1_309_089  # bg_dim 1
        assert n_params(SPAIR(PRESETS["benchmark-clevrtex"])) == 1_310_727  # bg_dim 4
        model = SPAIR(PRESETS["benchmark"])
    assert model.cfg.grid == (4, 4) and model.cfg.context_len == 5
    assert not any(p.requires_grad for p in model.baseline.parameters())  # unused REINFORCE baseline


def test_outputs_and_invariants():
    torch.manual_seed(0)
    model = SPAIR(tiny()).train()
    image = squares(3, 32)
    out = model({"image": image}, step=0)
    n = 4  # 2 × 2 cells
    assert out.recon.shape == (3, 3, 32, 32) and out.masks.shape == (3, n, 32, 32)
    assert out.masks_have_background is False
    assert out.slot_rgb.shape == (3, n, 3, 32, 32) and out.boxes.shape == (3, n, 4) and out.presence.shape == (3, n)
    assert (out.presence >= 0).all() and (out.presence <= 1).all()
    assert (out.masks >= 0).all() and (out.masks.sum(1) <= 1 + 1e-5).all()
    assert (out.recon >= 0).all() and (out.recon <= 1).all()
    assert (out.boxes >= 0).all() and (out.boxes[..., [0, 2]] <= 32).all() and (out.boxes[..., [1, 3]] <= 32).all()
    assert {"nll", "kl_where", "kl_what", "kl_depth", "kl_pres", "kl_bg"} <= set(out.losses)
    assert all(torch.isfinite(v).all() for v in out.losses.values())
    torch.testing.assert_close(out.loss, (out.losses["nll"] + 2.7 * (out.losses["kl_where"] + out.losses["kl_what"]
                               + out.losses["kl_depth"] + out.losses["kl_pres"]) + out.losses["kl_bg"]))  # fmt: skip
    # A cell's mask lives inside its box (up to the bilinear bleed of half a glimpse pixel).
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    for b in range(3):
        for k in range(n):
            x0, y0, x1, y1 = out.boxes[b, k].tolist()
            m = (x1 - x0) / 8 / 2 + 0.5
            outside = (xs < x0 - m) | (xs > x1 + m) | (ys < y0 - m) | (ys > y1 + m)
            assert out.masks[b, k][outside].max() == 0


def test_evaluation_presence_is_hard_and_counts_are_its_sum():
    torch.manual_seed(0)
    model = SPAIR(tiny()).eval()
    out = model({"image": squares(2, 32)}, step=10_000)
    assert set(out.presence.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(out.losses["count"], out.presence.sum(1).mean())


def test_presence_prior_is_annealed_from_the_step():
    cfg = tiny()
    assert cfg.presence_prior == Anneal.linear(1e-4, 0.99, 0, 10000)  # itr_lin(10000, 1e-4, .99)
    model = SPAIR(cfg).train()
    image = squares(2, 32)
    for step, value in ((0, 1e-4), (5000, 1e-4 + 0.5 * (0.99 - 1e-4)), (10_000, 0.99), (50_000, 0.99)):
        torch.manual_seed(0)
        out = model({"image": image}, step=step)
        assert abs(float(out.losses["presence_prior"]) - value) < 1e-6 * value
    # p = 1e-4 makes objects very unlikely a priori: the presence KL is far larger than at p = 0.99.
    torch.manual_seed(0)
    early = model({"image": image}, step=0).losses["kl_pres"]
    torch.manual_seed(0)
    late = model({"image": image}, step=10_000).losses["kl_pres"]
    assert early > 5 * late


def test_context_flows_from_visited_cells_only():
    """Changing cell i's latents changes the later cells that have it as a neighbour, never the
    earlier ones (2 × 2 cells: cell 0 is a neighbour of cells 1, 2 and 3)."""
    model = SPAIR(tiny())
    image = squares(1, 32)

    def run(perturb_call: int | None) -> torch.Tensor:
        calls = []

        def hook(module, inputs, output):
            calls.append(1)
            if len(calls) - 1 == perturb_call:
                return output[0] + 1.0, output[1]

        handle = model.object_encoder.register_forward_hook(hook)
        torch.manual_seed(0)
        with torch.no_grad():
            where = model.infer(image, 0)["where_mean"][0]
        handle.remove()
        return where

    base = run(None)
    first, last = run(0), run(3)
    torch.testing.assert_close(first[0], base[0])  # a cell's box comes before its own z_what
    assert all((first[k] - base[k]).abs().max() > 1e-6 for k in (1, 2, 3))
    torch.testing.assert_close(last, base)  # the last cell is nobody's neighbour


def test_plateau_on_validation_mse():
    model = SPAIR(tiny())
    specs = model.optimizers(TrainConfig())
    assert len(specs) == 1 and specs[0].plateau.metric == "mse"
    p = specs[0].plateau
    assert (p.factor, p.patience, p.min_lr, p.mode) == (0.1, 3, 5e-5, "min")
    opt = Optimisation(specs, TrainConfig(lr=1e-4, warmup_steps=0), model)
    for mse in (1.0, 1.0, 1.0, 1.0, 1.0):  # four validations without improvement after the first
        opt.on_validation({"mse": mse})
    opt.set_lr(0)
    assert opt.lrs()["lr"] == 5e-5  # 1e-4 × 0.1, floored at min_lr


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = SPAIR(tiny(presence_prior=0.5)).train()
    image = squares(4, 32)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(40):
        out = model({"image": image}, step=step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
