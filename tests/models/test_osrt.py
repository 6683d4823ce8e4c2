"""OSRT: parameter parity with the reference, Slot Mixer masks, init, training, chunked decoding."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from objdisc.data.synth import SynthConfig, render_scene
from objdisc.data.views import ViewsConfig, make_views_sample
from objdisc.models.osrt import OSRT, PRESETS, OSRTConfig, SlotMixerDecoder


def views_batch(scenes: int = 2, rays: int = 256, seed: int = 0, **synth) -> dict:
    """A collated "views" batch of small synthetic scenes (48×64 views, one input view)."""
    g = torch.Generator().manual_seed(seed)
    cfg = ViewsConfig(num_input_views=1, num_target_rays=rays, targets="all")
    samples = []
    for i in range(scenes):
        s = render_scene(SynthConfig(**synth), i)
        scene = {k: s[k] for k in ("image", "mask", "depth", "cam2world", "intrinsics")}
        samples.append(make_views_sample(scene | {"__key__": f"{i:08d}", "objects": [], "meta": {}}, cfg, g))
    return default_collate(samples)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("preset", "encoder", "total"),
    [("clevr3d", 57_857_184, 83_110_767), ("msn-hard", 57_897_120, 83_150_703), ("obsurf-msn", 57_855_648, 83_109_231)],
)
def test_parameter_counts_match_the_reference(preset, encoder, total):
    with torch.device("meta"):
        model = OSRT.from_preset(preset)
    assert count(model.encoder) + count(model.slot_attention) == encoder
    assert count(model.decoder) == 25_253_583
    assert count(model) == total


def test_spatial_broadcast_decoder_parameter_count():
    with torch.device("meta"):
        model = OSRT(OSRTConfig(decoder="spatial_broadcast"))
    assert count(model.decoder) == 9_725_956


def test_paper_architecture_forward_on_a_tiny_input():
    with torch.device("meta"):
        model = OSRT.from_preset("clevr3d")
    model = model.to_empty(device="cpu")
    with torch.no_grad():  # quick random weights: only the wiring at paper widths is under test
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    batch = views_batch(scenes=1, rays=16, height=32, width=32)
    with torch.no_grad():
        out = model.eval()(batch)
    assert out.recon.shape == (1, 16, 3) and out.masks.shape == (1, 16, 6) and out.slots.shape == (1, 6, 1536)
    assert torch.isfinite(out.loss)


def test_reference_initialisation():
    torch.manual_seed(0)
    model = OSRT(OSRTConfig.cpu())
    q = model.encoder.transformer.layers[0].attn.to_qkv.weight
    std = math.sqrt(1.0 / q.shape[1])
    assert q.abs().max() <= 2 * std and abs(q.std().item() - 0.88 * std) < 0.1 * std  # truncated at ±2σ
    ff_bias = model.encoder.transformer.layers[0].ff[0].bias
    assert 0 < ff_bias.abs().max() < 1e-5  # N(0, 1e-6)
    k = model.slot_attention.project_k.weight
    assert k.abs().max() <= 2 * math.sqrt(1.0 / k.shape[1])
    assert torch.all(model.decoder.render_mlp[0].bias == 0) and torch.all(model.decoder.query_mlp[0].bias == 0)
    default = OSRT(replace(OSRTConfig.cpu(), use_default_init=True))
    assert default.encoder.transformer.layers[0].ff[0].bias.abs().max() > 1e-3


@pytest.mark.parametrize("decoder", ["slot_mixer", "spatial_broadcast"])
def test_cpu_training_step_masks_and_gradients(decoder):
    torch.manual_seed(0)
    model = OSRT(replace(OSRTConfig.cpu(), decoder=decoder))
    batch = views_batch(scenes=4, rays=256)
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.recon.shape == (4, 256, 3)
    assert out.masks.shape == (4, 256, 6) and (out.masks >= 0).all()
    torch.testing.assert_close(out.masks.sum(-1), torch.ones(4, 256))
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_slot_mix_is_the_weighted_mean_of_the_slots():
    torch.manual_seed(0)
    dec = OSRT(OSRTConfig.cpu()).decoder
    assert isinstance(dec, SlotMixerDecoder)
    slots = torch.randn(1, 6, 64)
    o, d = torch.randn(1, 5, 3), nn.functional.normalize(torch.randn(1, 5, 3), dim=-1)
    rgb, w = dec(slots, o, d)
    q = dec.query_mlp(dec.query_encoder(o, d))
    x = dec.transformer(q, slots)
    logits = dec.mix_q(x) @ dec.mix_k(slots).transpose(1, 2) / math.sqrt(64)
    torch.testing.assert_close(w, logits.softmax(-1), atol=1e-6, rtol=0)
    expected = torch.sigmoid(dec.render_mlp(torch.cat([w @ slots, q], -1)))
    torch.testing.assert_close(rgb, expected, atol=1e-6, rtol=0)


def test_overfits_one_scene():
    torch.manual_seed(0)
    model = OSRT(replace(OSRTConfig.cpu(), encoder_depth=1, decoder_depth=1))
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
    model = OSRT(OSRTConfig.cpu()).eval()
    batch = views_batch(scenes=2, rays=64)
    with torch.no_grad():
        slots = model.encode(batch)
        o, d = batch["target_camera_pos"], batch["target_rays"]
        full = model.decode(slots, o, d)
        parts = [model.decode(slots, o[:, i : i + 9], d[:, i : i + 9]) for i in range(0, 64, 9)]
    for key in ("rgb", "masks"):
        torch.testing.assert_close(torch.cat([p[key] for p in parts], 1), full[key], atol=1e-5, rtol=0)


def test_bf16_autocast_runs():
    torch.manual_seed(0)
    model = OSRT(OSRTConfig.cpu())
    batch = views_batch(scenes=1, rays=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and out.masks.dtype == torch.float32 and torch.isfinite(out.loss)
    torch.testing.assert_close(out.masks.sum(-1), torch.ones(1, 32))


def test_presets():
    assert {"clevr3d", "msn-hard", "obsurf-msn"} <= set(PRESETS)
    assert (PRESETS["clevr3d"].num_slots, PRESETS["msn-hard"].num_slots, PRESETS["obsurf-msn"].num_slots) == (6, 32, 5)
    cfg = OSRTConfig()
    assert (cfg.decoder_dim_head, cfg.decoder_mlp_dim, cfg.mixing_dim) == (128, 3072, 1536)
