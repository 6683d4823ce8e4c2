"""ObSuRF and the volume-rendering / ResNet blocks: parity, rendering invariants, losses, training."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from objdisc.data.synth import SynthConfig, render_scene
from objdisc.data.views import ViewsConfig, make_views_sample
from objdisc.geometry import pixel_rays
from objdisc.models.blocks.nerf import (
    alpha_composite,
    importance_depths,
    over_background,
    sample_pdf,
    stratified_depths,
    surface_density_composite,
)
from objdisc.models.blocks.resnet import ResNet
from objdisc.models.obsurf import PRESETS, ObSuRF, ObSuRFConfig, point_encoding


def views_batch(scenes: int = 2, rays: int = 256, seed: int = 0, **synth) -> dict:
    """A collated "views" batch of small synthetic scenes (48×64 views, one input view, depths)."""
    g = torch.Generator().manual_seed(seed)
    cfg = ViewsConfig(num_input_views=1, num_target_rays=rays, targets="all")
    samples = []
    for i in range(scenes):
        s = render_scene(SynthConfig(**synth), i)
        scene = {k: s[k] for k in ("image", "mask", "depth", "cam2world", "intrinsics")}
        samples.append(make_views_sample(scene | {"__key__": f"{i:08d}", "objects": [], "meta": {}}, cfg, g))
    return default_collate(samples)


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# Blocks


def test_resnet_without_max_pool_quarters_the_resolution():
    net = ResNet(105, 8, (8, 8, 8, 8), (1, 1, 1, 1), downsample=2)
    assert net(torch.randn(1, 105, 48, 64)).shape == (1, 8, 12, 16)
    assert ResNet(5, 4, (4, 4), (1, 1), downsample=0)(torch.randn(1, 5, 6, 7)).shape == (1, 4, 6, 7)
    with pytest.raises(ValueError, match="downsample"):
        ResNet(3, 4, (4, 4), (1, 1), downsample=3)


def test_alpha_composite_known_values():
    density = torch.tensor([[0.0, math.log(2.0), 1e9]])  # empty, α = ½ over δ = 1, opaque
    depths = torch.tensor([[1.0, 2.0, 3.0]])
    colour = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])
    out = alpha_composite(density, colour, depths)
    torch.testing.assert_close(out["weights"], torch.tensor([[0.0, 0.5, 0.5]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["rgb"], torch.tensor([[0.0, 0.5, 0.5]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["depth"], torch.tensor([2.5]))
    torch.testing.assert_close(out["alpha"], torch.tensor([1.0]))
    thin = alpha_composite(torch.tensor([[0.0, math.log(2.0)]]), colour[:, :2], torch.tensor([[1.0, 2.0]]))
    over_white = over_background(thin["rgb"], thin["alpha"])
    torch.testing.assert_close(over_white, torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-6, rtol=0)


def test_surface_density_weights():
    torch.manual_seed(0)
    density = torch.rand(4, 10, 32) * 3
    depths = torch.sort(torch.rand(4, 10, 32) * 20, dim=-1).values
    out = surface_density_composite(density, torch.rand(4, 10, 32, 3), depths)
    assert (out["weights"] >= 0).all() and (out["weights"].sum(-1) <= 1 + 1e-5).all()
    torch.testing.assert_close(out["weights"].sum(-1), torch.ones(4, 10))
    assert ((out["alpha"] >= 0) & (out["alpha"] <= 1)).all()
    # Two samples, density 1 each, 1 apart: weights ∝ (1, e^-1).
    two = surface_density_composite(torch.ones(1, 2), torch.zeros(1, 2, 3), torch.tensor([[0.0, 1.0]]))
    e = math.exp(-1)
    torch.testing.assert_close(two["weights"], torch.tensor([[1 / (1 + e), e / (1 + e)]]))
    torch.testing.assert_close(two["alpha"], torch.tensor([1 - e]))
    empty = surface_density_composite(torch.zeros(1, 5), torch.rand(1, 5, 3), torch.arange(5.0)[None])
    assert torch.equal(empty["weights"], torch.zeros(1, 5))


def test_sampling_helpers():
    far = torch.tensor([10.0, 20.0])
    det = stratified_depths(0.0, far, 4, deterministic=True)
    torch.testing.assert_close(det, torch.tensor([[1.25, 3.75, 6.25, 8.75], [2.5, 7.5, 12.5, 17.5]]))
    torch.manual_seed(0)
    rnd = stratified_depths(0.0, far, 4, deterministic=False)
    assert ((rnd - det).abs() <= far[:, None] / 8).all()
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(sample_pdf(bins, torch.ones(1, 4), 5, True), torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]]))
    depths = torch.linspace(1, 10, 10)[None]
    weights = torch.zeros(1, 10)
    weights[0, 6] = 1.0  # all mass at t = 7: fine samples fall in the bins beside it
    fine = importance_depths(depths, weights, 0.0, 16, deterministic=True)[0]
    # Quantile 0 lands on ``near``, quantile 1 inside the last bins (which hold only the 1e-5
    # floor); the rest follow the 75 % / 25 % split of the weight into the bins beside t = 7.
    assert fine[0] == 0.0 and 9.9 < fine[-1] <= 10.5
    inner = fine[1:-1]
    assert ((inner > 6.0) & (inner < 8.0)).all()
    assert ((inner < 7.0).float().mean() - 0.75).abs() < 0.1


# ---------------------------------------------------------------------------------------------
# Model


@pytest.mark.parametrize(
    ("preset", "encoder", "decoder", "total"),
    [
        ("clevr3d", 3_320_832, 237_258, 3_558_090),
        ("msn", 11_950_080, 867_530, 12_817_610),
        ("clevr3d-nerftrain", 3_320_832, 2 * 220_874, 3_762_580),
        ("msn-nerftrain", 11_950_080, 2 * 801_994, 13_554_068),
    ],
)
def test_parameter_counts_match_the_reference(preset, encoder, decoder, total):
    with torch.device("meta"):
        model = ObSuRF.from_preset(preset)
    assert count(model.encoder) == encoder
    assert count(model.decoder) + count(model.fine_decoder) == decoder
    assert count(model) == total


def test_slot_attention_parameter_count_and_nopixel_flag():
    with torch.device("meta"):
        clevr = ObSuRF.from_preset("clevr3d")
        nopixel = ObSuRF.from_preset("clevr3d-nopixel")
    assert count(clevr.encoder.slot_attention) == 248_704
    assert count(nopixel) == 3_558_090 - 128 * 128  # the colour head loses its pixel-feature inputs


def test_paper_architecture_on_a_tiny_input():
    torch.manual_seed(0)
    model = ObSuRF.from_preset("clevr3d")
    batch = views_batch(scenes=1, rays=16, height=32, width=32)
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.masks.shape == (1, 16, 7) and out.slots.shape == (1, 7, 128)
    model.eval()
    with torch.no_grad():
        latent = model.encode(batch)
        assert latent["pixel_features"].shape == (1, 8, 8, 128)
        dec = model.decode(latent, batch["target_camera_pos"][:, :4], batch["target_rays"][:, :4])
    assert dec["rgb"].shape == (1, 4, 3) and dec["masks"].shape == (1, 4, 7)


def test_cpu_training_step_reaches_every_parameter():
    torch.manual_seed(0)
    model = ObSuRF(ObSuRFConfig.cpu())
    batch = views_batch(scenes=4, rays=256)
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.recon.shape == (4, 256, 3)
    torch.testing.assert_close(out.masks.sum(-1), torch.ones(4, 256))
    assert set(out.losses) == {"value_ll", "depth_ll", "overlap", "mse"}
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    with pytest.raises(ValueError, match="target_depths"):
        model({k: v for k, v in batch.items() if k != "target_depths"})


def test_overlap_ramp_follows_the_training_step():
    model = ObSuRF(ObSuRFConfig.cpu())
    assert model.overlap_weight(0) == 0.0
    assert model.overlap_weight(30000) == pytest.approx(0.025)
    assert model.overlap_weight(50000) == pytest.approx(0.05)
    assert "step" not in model.state_dict()  # the step is handed in, not hidden in a buffer


def test_depth_loss_terms_by_hand():
    torch.manual_seed(0)
    model = ObSuRF(replace(ObSuRFConfig.cpu(), surface_noise=0.0, overlap_l1=0.0))
    batch = views_batch(scenes=1, rays=32)
    torch.manual_seed(1)
    out = model(batch)
    torch.manual_seed(1)
    latent = model.encode(batch)
    o, d, depth = batch["target_camera_pos"], batch["target_rays"], batch["target_depths"]
    torch.rand_like(depth)  # the (zero) surface noise draw
    surface = model.field(latent, o + d * depth[..., None], d)
    near = torch.rand_like(depth) < 0.5
    u = torch.rand_like(depth)
    t = torch.where(near, 0.98 + 0.02 * u, 0.98 * u)
    w = torch.where(near, 0.04 * depth, 1.96 * depth)
    empty = model.field(latent, o + d * (t * depth)[..., None], d)
    depth_ll = (torch.log(surface["density"]) - w * empty["density"]).mean()
    value_ll = torch.distributions.Normal(surface["colour"], 0.2).log_prob(batch["target_pixels"]).sum(-1).mean()
    torch.testing.assert_close(out.loss, -(value_ll + depth_ll), atol=1e-4, rtol=1e-5)


def test_pixel_features_are_read_where_points_project():
    model = ObSuRF(ObSuRFConfig.cpu())
    batch = views_batch(scenes=1, rays=8)
    latent = model.encode(batch)
    hf, wf, c = latent["pixel_features"].shape[1:]
    latent["pixel_features"] = torch.arange(hf * wf, dtype=torch.float32).view(1, hf, wf, 1).expand(1, hf, wf, c)
    c2w, k = batch["input_cam2world"][0, 0], batch["input_intrinsics"][0, 0]
    o, d = pixel_rays(c2w, k, 48, 64)
    rows, cols = torch.tensor([0, 5, 47, 20]), torch.tensor([0, 63, 10, 33])
    points = (o[rows, cols] + 7.0 * d[rows, cols])[None]
    feats = model._pixel_features(latent, points)[0, :, 0]
    assert feats.tolist() == ((rows // 4) * wf + cols // 4).float().tolist()


def test_decode_renders_normalised_masks_and_chunks_exactly():
    torch.manual_seed(0)
    model = ObSuRF(replace(ObSuRFConfig.cpu(), render_chunk=7)).eval()
    batch = views_batch(scenes=2, rays=20)
    with torch.no_grad():
        latent = model.encode(batch)
        o, d = batch["target_camera_pos"], batch["target_rays"]
        chunked = model.decode(latent, o, d)
        model.cfg.render_chunk = 512
        full = model.decode(latent, o, d)
    for key in ("rgb", "depth", "masks", "alpha"):
        torch.testing.assert_close(chunked[key], full[key], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full["masks"].sum(-1), torch.ones(2, 20), atol=1e-5, rtol=0)
    assert ((full["alpha"] >= 0) & (full["alpha"] <= 1)).all()
    assert (full["depth"] <= model.cfg.render_far + 1e-3).all()


def test_no_density_below_the_ground():
    torch.manual_seed(0)
    model = ObSuRF(ObSuRFConfig.cpu()).eval()
    batch = views_batch(scenes=1, rays=4)
    with torch.no_grad():
        latent = model.encode(batch)
        origins = torch.tensor([[[0.0, 0.0, 5.0]]])
        dirs = torch.tensor([[[0.0, 0.0, -1.0]]])
        depths = torch.tensor([[[4.0, 5.05, 5.2, 6.0]]])  # z = 1, -0.05, -0.2, -1
        out = model._along_rays(latent, origins, dirs, depths, fine=False)
    assert (out["density"][0, 0, :2] > 0).all() and (out["density"][0, 0, 2:] == 0).all()


def test_overfits_one_scene():
    torch.manual_seed(0)
    model = ObSuRF(ObSuRFConfig.cpu())
    batch = views_batch(scenes=1, rays=128)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5 * abs(first), losses[::10]


@pytest.mark.parametrize("loss", ["nerf", "depthnerf"])
def test_nerf_losses_train_with_a_fine_decoder(loss):
    torch.manual_seed(0)
    model = ObSuRF(ObSuRFConfig.cpu(loss=loss, fine_decoder=True, use_pixel_features=False, nerf_coarse=8, nerf_fine=8))
    batch = views_batch(scenes=2, rays=32)
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.recon.shape == (2, 32, 3)
    assert ("depth_mse" in out.losses) == (loss == "depthnerf")
    torch.testing.assert_close(out.masks.sum(-1), torch.ones(2, 32), atol=1e-5, rtol=0)
    assert model.fine_decoder.main[0].weight.grad is not None and model.decoder.main[0].weight.grad is not None


def test_bf16_autocast_runs():
    torch.manual_seed(0)
    model = ObSuRF(ObSuRFConfig.cpu())
    batch = views_batch(scenes=1, rays=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        dec = model.decode(model.encode(batch), batch["target_camera_pos"], batch["target_rays"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and dec["rgb"].dtype == torch.float32


def test_point_encoding_and_presets():
    enc = point_encoding(torch.tensor([[1.0, 2.0, 3.0]]), num_freqs=16, start_freq=-5)
    assert enc.shape == (1, 99) and enc[0, :3].tolist() == [1.0, 2.0, 3.0]
    assert {"clevr3d", "msn"} <= set(PRESETS)
    assert (PRESETS["msn"].num_slots, PRESETS["msn"].max_density, PRESETS["clevr3d"].num_slots) == (5, 8.0, 7)
    with pytest.raises(ValueError, match="one input view"):
        ObSuRF(ObSuRFConfig.cpu()).encode({"input_images": torch.zeros(1, 2, 3, 8, 8)})
    batch = views_batch(scenes=1, rays=4)
    batch["transform"] = batch["transform"] * 2
    with pytest.raises(ValueError, match="world coordinates"):
        ObSuRF(ObSuRFConfig.cpu()).encode(batch)


def test_cpu_preset_lets_the_image_reach_the_encoder():
    """The image is 3 of 45 stem channels and varies by ~0.1 on grey scenes: at scale 1 the pixel
    encoding barely changes when the view is replaced by its mean colour; the CPU preset's
    image_scale must make the scene, not the camera, move it."""
    torch.manual_seed(0)
    model = ObSuRF(ObSuRFConfig.cpu()).eval()
    assert model.cfg.image_scale == 8.0
    batch = views_batch(scenes=2)
    image, pos, rays = batch["input_images"][:, 0], batch["input_camera_pos"][:, 0], batch["input_rays"][:, 0]
    flat = image.mean(dim=(2, 3), keepdim=True).expand_as(image)

    def image_effect(scale: float) -> float:
        model.cfg.image_scale = scale
        with torch.no_grad():
            seen, _ = model.encoder(image, pos, rays)
            blank, _ = model.encoder(flat, pos, rays)
        return ((seen - blank).norm() / seen.norm()).item()

    assert image_effect(8.0) > 3 * image_effect(1.0)
    # The scale is exactly an affine map of the input image.
    with torch.no_grad():
        model.cfg.image_scale = 8.0
        scaled = model.encoder(image, pos, rays)[0]
        model.cfg.image_scale = 1.0
        torch.testing.assert_close(model.encoder((image - 0.5) * 8.0 + 0.5, pos, rays)[0], scaled)
    with pytest.raises(ValueError, match="image_scale"):
        ObSuRFConfig.cpu(image_scale=0.0)
