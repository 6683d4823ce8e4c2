"""SRT / ISRT and their blocks: parameter parity with the reference, decoding, training."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from objdisc.data.synth import SynthConfig, render_scene
from objdisc.data.views import ViewsConfig, make_views_sample
from objdisc.models.blocks.ray_encoder import RayEncoder
from objdisc.models.blocks.transformer import Attention, Transformer
from objdisc.models.srt import PRESETS, SRT, SRTConfig


def views_batch(
    scenes: int = 2, rays: int = 256, input_views: int = 1, seed: int = 0, canonical: bool = False, **synth
) -> dict:
    """A collated "views" batch of small synthetic scenes (48×64 views)."""
    g = torch.Generator().manual_seed(seed)
    cfg = ViewsConfig(num_input_views=input_views, num_target_rays=rays, targets="all", canonical=canonical)
    samples = []
    for i in range(scenes):
        s = render_scene(SynthConfig(**synth), i)
        scene = {k: s[k] for k in ("image", "mask", "depth", "cam2world", "intrinsics")}
        samples.append(make_views_sample(scene | {"__key__": f"{i:08d}", "objects": [], "meta": {}}, cfg, g))
    return default_collate(samples)


def materialise(model: nn.Module) -> nn.Module:
    """Give a model built on the meta device real CPU storage with PyTorch's default init (fast;
    for forward smoke tests of the paper architectures)."""
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GRUCell, nn.BatchNorm2d)):
                module.reset_parameters()
            elif isinstance(module, nn.MultiheadAttention):
                module._reset_parameters()
        for name, p in model.named_parameters():
            if "." not in name or name.rsplit(".", 1)[1] not in ("weight", "bias", "in_proj_weight", "in_proj_bias"):
                p.normal_()
        for b in model.buffers():
            if not b.is_floating_point():
                b.zero_()
    return model


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# Blocks


def test_ray_encoder_layout():
    enc = RayEncoder(pos_octaves=2, pos_start_octave=-1, ray_octaves=1, ray_start_octave=0)
    assert enc.out_dim == 18 and RayEncoder().out_dim == 180
    o = torch.tensor([[1.0, 0.0, 0.5]])
    d = torch.tensor([[0.0, 0.5, 0.0]])
    out = enc(o, d)
    pi = torch.pi
    pos_sin = torch.tensor([0.0 + torch.sin(torch.tensor(0.5 * pi)), torch.sin(torch.tensor(pi))])
    torch.testing.assert_close(out[0, :2], pos_sin, atol=1e-6, rtol=0)  # x at octaves -1, 0
    torch.testing.assert_close(out[0, 12:], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    image = enc.encode_image(o, d.expand(1, 2, 3, 3))
    assert image.shape == (1, 18, 2, 3)
    torch.testing.assert_close(image[0, :, 1, 2], out[0])


def test_attention_matches_a_direct_softmax():
    torch.manual_seed(0)
    attn = Attention(dim=6, heads=2, dim_head=4, kv_dim=5)
    x, ctx = torch.randn(2, 3, 6), torch.randn(2, 7, 5)
    q = attn.to_q(x).view(2, 3, 2, 4).transpose(1, 2)
    k, v = (t.view(2, 7, 2, 4).transpose(1, 2) for t in attn.to_kv(ctx).chunk(2, -1))
    ref = ((q @ k.transpose(-1, -2)) / 2.0).softmax(-1) @ v
    torch.testing.assert_close(attn(x, ctx), attn.to_out(ref.transpose(1, 2).reshape(2, 3, 8)), atol=1e-6, rtol=0)


def test_cross_attention_transformer_decodes_queries_independently():
    torch.manual_seed(0)
    t = Transformer(dim=8, depth=2, heads=2, dim_head=4, mlp_dim=16, kv_dim=12)
    q, ctx = torch.randn(1, 10, 8), torch.randn(1, 5, 12)
    full = t(q, ctx)
    torch.testing.assert_close(torch.cat([t(q[:, :3], ctx), t(q[:, 3:], ctx)], 1), full, atol=1e-6, rtol=0)
    torch.testing.assert_close(t(q.flip(1), ctx).flip(1), full, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Parameter parity with stelzner/srt's models (counts of the reference built with random init):
# built on the meta device, no allocation.


@pytest.mark.parametrize(
    ("preset", "encoder", "total"),
    [("nmr", 69_885_600, 73_932_563), ("msn", 69_885_600, 73_932_563), ("clevr3d", 69_885_600, 73_932_563),
     ("isrt-msn", 29_514_912, 41_033_583)],
)
def test_parameter_counts_match_the_reference(preset, encoder, total):
    with torch.device("meta"):
        model = SRT.from_preset(preset)
    assert count(model.encoder) == encoder
    assert count(model) == total


def test_srt_config_variant_defaults():
    cfg = SRTConfig(variant="isrt")
    assert (cfg.num_conv_blocks, cfg.encoder_depth, cfg.decoder) == (3, 5, "isrt")
    cfg = SRTConfig()
    assert (cfg.num_conv_blocks, cfg.encoder_depth, cfg.decoder) == (4, 10, "lightfield")
    with pytest.raises(ValueError, match="variant"):
        SRTConfig(variant="vsrt")


# ---------------------------------------------------------------------------------------------
# Smoke, overfit, chunking


@pytest.mark.parametrize("preset", ["nmr", "isrt-msn"])
def test_paper_architecture_forward_on_a_tiny_input(preset):
    with torch.device("meta"):
        model = SRT.from_preset(preset)
    model = materialise(model).eval()
    batch = views_batch(scenes=1, rays=16, input_views=2, height=32, width=32)
    with torch.no_grad():
        out = model(batch)
    assert out.recon.shape == (1, 16, 3) and torch.isfinite(out.loss)


@pytest.mark.parametrize("variant", ["srt", "isrt"])
def test_cpu_training_step_reaches_every_parameter(variant):
    torch.manual_seed(0)
    model = SRT(SRTConfig.cpu(variant))
    batch = views_batch(scenes=4, rays=256, input_views=2)
    start = time.perf_counter()
    out = model(batch)
    out.loss.backward()
    assert time.perf_counter() - start < 5.0  # well under 1 s on an idle core; slack for shared CI
    assert torch.isfinite(out.loss) and out.recon.shape == (4, 256, 3) and out.masks is None
    assert out.recon.min() >= 0 and out.recon.max() <= 1
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("variant", ["srt", "isrt"])
def test_he_init_keeps_the_input_in_the_latents(variant):
    # Two scenes' set-latents must differ by what their views hold. With PyTorch's default init
    # the CPU encoder's ReLU convolutions shrink the input about 2.5x each, so next to SRT's
    # N(0, 1) embeddings the two latents agree to 1e-4 (a trained model then ignores its input);
    # He init keeps them a fifth of their spread apart.
    batch = views_batch(scenes=2)

    def spread(init: str) -> float:
        torch.manual_seed(0)
        model = SRT(replace(SRTConfig.cpu(variant), conv_init=init))
        with torch.no_grad():
            latent = model.encode(batch)
        return ((latent[0] - latent[1]).std() / latent.std()).item()

    assert spread("he") > 0.15
    assert spread("he") > 25 * spread("torch")
    with pytest.raises(ValueError, match="conv_init"):
        SRT(replace(SRTConfig.cpu(variant), conv_init="xavier"))


def test_cpu_preset_decodes_each_scene_from_its_own_latent():
    # The CPU preset must read its input: trained to redraw its own input view (canonical frame, so
    # the query rays are the same in every scene and only the latent can tell scenes apart), it
    # beats the same decoder fed another scene's latent. With the reference's init (PyTorch's
    # default convolutions and N(0, 1) embeddings) the CPU-sized model decodes every scene alike.
    batch = views_batch(scenes=8, rays=16, canonical=True)  # with 4 scenes neither init separates them in 300 steps
    b, _, _, h, w = batch["input_images"].shape
    dirs = batch["input_rays"][:, 0].reshape(b, h * w, 3)
    pixels = batch["input_images"][:, 0].flatten(2).transpose(1, 2)
    origins = batch["input_camera_pos"][:, 0:1].expand(-1, h * w, -1)

    def gain(cfg: SRTConfig) -> float:
        """PSNR with each scene's own latent minus PSNR with its neighbour's, after training."""
        torch.manual_seed(0)
        model = SRT(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(150):
            idx = torch.randint(0, h * w, (256,))
            pred = model.decode(model.encode(batch), origins[:, idx], dirs[:, idx])["rgb"]
            loss = (pred - pixels[:, idx]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            latent = model.encode(batch)
            psnr = [
                -10 * torch.log10((model.decode(lat, origins, dirs)["rgb"] - pixels).square().mean()).item()
                for lat in (latent, latent.roll(1, 0))
            ]
        return psnr[0] - psnr[1]

    assert gain(SRTConfig.cpu()) > 2.0  # 4.5 dB measured
    assert gain(SRTConfig.cpu(conv_init="torch", embedding_std=1.0)) < 0.5


def test_overfits_one_scene():
    torch.manual_seed(0)
    model = SRT(replace(SRTConfig.cpu(), encoder_depth=1, decoder_depth=1))
    batch = views_batch(scenes=1, rays=128)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_chunked_decode_equals_unchunked():
    torch.manual_seed(0)
    model = SRT(SRTConfig.cpu("isrt")).eval()
    batch = views_batch(scenes=2, rays=64)
    with torch.no_grad():
        latent = model.encode(batch)
        o, d = batch["target_camera_pos"], batch["target_rays"]
        full = model.decode(latent, o, d)["rgb"]
        parts = [model.decode(latent, o[:, i : i + 10], d[:, i : i + 10])["rgb"] for i in range(0, 64, 10)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)


def test_bf16_autocast_runs():
    torch.manual_seed(0)
    model = SRT(SRTConfig.cpu())
    batch = views_batch(scenes=1, rays=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_presets_include_the_paper_configs():
    assert {"nmr", "msn", "clevr3d", "isrt-msn"} <= set(PRESETS)
    with pytest.raises(ValueError, match="unknown SRT preset"):
        SRT.from_preset("nope")


# ---------------------------------------------------------------------------------------------
# V-SRT: the SRT encoder with the NeRF decoder (kv = encoder width; stelzner/srt's omits ``kv_dim``)


def vsrt(**overrides) -> SRT:
    return SRT(replace(PRESETS["vsrt-cpu"], **overrides))


def test_vsrt_decoder_parameter_count():
    """The decoder at the paper's size, from the architecture (d = 90 point features, inner width
    12 × 64 = 768, kv = the encoder width 768, MLP 1536, heads 128 wide):

    per transformer layer   LayerNorm 2·90                       180
                            to_q 90·768 (no bias)             69,120
                            to_kv 768·(2·768) (no bias)    1,179,648
                            to_out 768·90 + 90                69,210
                            LayerNorm 2·90                       180
                            FF 90·1536 + 1536 + 1536·90 + 90 278,106
                                                           ---------
                                                           1,596,444  × depth 2 = 3,192,888
    colour head   90·128 + 128 + 128·3 + 3                    12,035
    density head  90·128 + 128 + 128·1 + 1                    11,777
                                                           ---------
                                                           3,216,700
    The whole V-SRT is SRT's encoder (69,885,600) plus this decoder.
    """
    layer = 180 + 90 * 768 + 768 * 2 * 768 + (768 * 90 + 90) + 180 + (90 * 1536 + 1536 + 1536 * 90 + 90)
    assert layer == 1_596_444
    heads = (90 * 128 + 128 + 128 * 3 + 3) + (90 * 128 + 128 + 128 + 1)
    for preset in ("vsrt-nmr", "vsrt-clevr3d"):
        with torch.device("meta"):
            model = SRT.from_preset(preset)
        assert count(model.decoder.transformer) == 2 * layer == 3_192_888
        assert count(model.decoder) == 2 * layer + heads == 3_216_700
        assert count(model.encoder) == 69_885_600 and count(model) == 73_102_300
        assert model.decoder.transformer.layers[0].attn.to_kv.in_features == 768  # kv = encoder width


def test_vsrt_presets_are_the_reference_configs():
    for preset, near, far in (("vsrt-nmr", 2.0, 4.0), ("vsrt-clevr3d", 0.035, 35.0)):
        cfg = PRESETS[preset]
        assert (cfg.variant, cfg.decoder, cfg.num_conv_blocks, cfg.encoder_depth) == ("srt", "nerf", 4, 10)
        assert (cfg.nerf_near, cfg.nerf_far, cfg.nerf_min_z) == (near, far, None)
        assert (cfg.nerf_coarse, cfg.nerf_fine, cfg.nerf_hidden, cfg.decoder_depth) == (128, 64, 128, 2)
        assert (cfg.pos_octaves, cfg.pos_start_octave) == (15, -5)
    with pytest.raises(ValueError, match="near"):
        SRTConfig(decoder="nerf", nerf_near=5.0, nerf_far=4.0)
    with pytest.raises(ValueError, match="nerf_coarse"):
        SRTConfig(decoder="nerf", nerf_coarse=1)
    with pytest.raises(ValueError, match="'lightfield', 'isrt' or 'nerf'"):
        SRTConfig(decoder="volume")


def test_vsrt_paper_architecture_forward_on_a_tiny_input():
    """The paper-size model (materialised from meta, PyTorch's default init) on 2 rays of a
    32×32 view: 128 + 64 samples per ray through the 90-wide cross-attention decoder."""
    with torch.device("meta"):
        model = SRT.from_preset("vsrt-nmr")
    model = materialise(model).eval()
    batch = views_batch(scenes=1, rays=2, input_views=1, height=32, width=32)
    with torch.no_grad():
        latent = model.encode(batch)
        fine, coarse = model.decoder.render(latent, batch["target_camera_pos"], batch["target_rays"], True)
    assert fine["weights"].shape == (1, 2, 192) and coarse["weights"].shape == (1, 2, 128)
    assert fine["rgb"].shape == (1, 2, 3) and torch.isfinite(fine["rgb"]).all()


def test_vsrt_training_step_shapes_and_every_parameter():
    torch.manual_seed(0)
    model = vsrt()
    batch = views_batch(scenes=2, rays=64, input_views=2)
    start = time.perf_counter()
    out = model(batch)
    out.loss.backward()
    assert time.perf_counter() - start < 10.0  # ~0.3 s on an idle core; slack for a shared machine
    assert out.recon.shape == (2, 64, 3) and out.masks is None and out.slots is None
    assert out.recon.min() >= 0 and out.recon.max() <= 1 + 1e-6
    assert set(out.losses) == {"mse", "coarse_mse", "psnr"}
    # The loss is the fine MSE plus the coarse MSE.
    torch.testing.assert_close(out.loss.detach(), out.losses["mse"] + out.losses["coarse_mse"])
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    model.eval()
    with torch.no_grad():
        dec = model.decode(model.encode(batch), batch["target_camera_pos"], batch["target_rays"])
    assert dec["rgb"].shape == (2, 64, 3) and dec["depth"].shape == (2, 64) and dec["alpha"].shape == (2, 64)
    assert ((dec["alpha"] >= 0) & (dec["alpha"] <= 1)).all()
    cfg = model.cfg
    assert (dec["depth"] >= 0).all() and (dec["depth"] <= cfg.nerf_far + 1e-3).all()


def test_vsrt_decode_treats_rays_independently():
    """Evaluation samples deterministically, so chunked = whole: in ``decode``'s own chunks
    (``nerf_chunk``) and in the render loop's (``decode_chunked``), and any ray order."""
    from objdisc.models.family import decode_chunked

    torch.manual_seed(0)
    model = vsrt().eval()
    batch = views_batch(scenes=2, rays=40)
    o, d = batch["target_camera_pos"], batch["target_rays"]
    with torch.no_grad():
        latent = model.encode(batch)
        whole = model.decode(latent, o, d)
        loop = decode_chunked(model, latent, o, d, chunk=9)
        model.cfg.nerf_chunk = 7
        inner = model.decode(latent, o, d)
        flipped = model.decode(latent, o.flip(1), d.flip(1))
    for key in ("rgb", "depth", "alpha"):
        torch.testing.assert_close(loop[key], whole[key], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(inner[key], whole[key], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(flipped[key].flip(1), whole[key], atol=1e-5, rtol=1e-5)


def test_vsrt_compositing_invariants():
    """Weights are non-negative, sum to alpha ≤ 1; where the density is zero the render is the
    white background (alpha 0, depth 0)."""
    torch.manual_seed(0)
    model = vsrt()
    batch = views_batch(scenes=1, rays=32)
    o, d = batch["target_camera_pos"], batch["target_rays"]
    with torch.no_grad():
        latent = model.encode(batch)
        for deterministic in (False, True):
            fine, coarse = model.decoder.render(latent, o, d, deterministic)
            for out in (fine, coarse):
                total = out["weights"].sum(-1)
                assert (out["weights"] >= 0).all() and (total <= 1 + 1e-6).all()
                torch.testing.assert_close(total, out["alpha"], atol=1e-5, rtol=0)
        last = model.decoder.density_head[-1]
        last.weight.zero_()
        last.bias.fill_(-80.0)  # softplus(−80) ≈ 2e-35: no density anywhere
        empty = model.eval().decode(latent, o, d)
    torch.testing.assert_close(empty["rgb"], torch.ones(1, 32, 3), atol=1e-6, rtol=0)
    assert empty["alpha"].abs().max() < 1e-6 and empty["depth"].abs().max() < 1e-4


def test_vsrt_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = vsrt(encoder_depth=1, decoder_depth=1)
    batch = views_batch(scenes=1, rays=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.75 * first, losses[::5]  # about 0.63 over seeds 0-2


def test_vsrt_samples_stop_at_min_z():
    """With ``nerf_min_z`` the samples end where the ray meets that plane."""
    torch.manual_seed(0)
    model = vsrt(nerf_min_z=0.0, nerf_near=0.5, nerf_far=50.0).eval()
    seen = []
    field = model.decoder.field
    model.decoder.field = lambda latents, points: (seen.append(points), field(latents, points))[1]
    origins = torch.tensor([[[0.0, 0.0, 4.0], [1.0, 2.0, 6.0]]])
    dirs = torch.nn.functional.normalize(torch.tensor([[[0.0, 0.6, -0.8], [0.0, 0.0, -1.0]]]), dim=-1)
    with torch.no_grad():
        latent = torch.randn(1, 5, model.cfg.latent_dim)
        model.decode(latent, origins, dirs)
    points = torch.cat(seen, dim=1)
    assert points.shape[1] == 2 * (model.cfg.nerf_coarse + model.cfg.nerf_fine)
    assert points[..., 2].min() >= -1e-4  # nothing below the plane z = 0
    assert points[..., 2].min() < 0.5  # and the samples reach down to it


def test_vsrt_bf16_autocast_runs():
    torch.manual_seed(0)
    model = vsrt()
    batch = views_batch(scenes=1, rays=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
