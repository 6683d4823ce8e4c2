"""Slot Attention autoencoder: outputs, parameter parity with the ClevrTex benchmark, overfitting."""

from __future__ import annotations

import pytest
import torch

from objdisc.models.base import ModelOutput
from objdisc.models.family import IMAGE
from objdisc.models.slot_attention import SlotAttentionAutoEncoder, SlotAttentionConfig

from .scenes import squares




def tiny(**overrides) -> SlotAttentionConfig:
    kwargs = dict(resolution=16, num_slots=3, slot_dim=32, hidden=32, mlp_hidden=64, decoder_init=4)
    kwargs.update(overrides)
    return SlotAttentionConfig(**kwargs)




def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_defaults() -> None:
    cfg = SlotAttentionConfig()
    assert (cfg.resolution, cfg.num_slots, cfg.iters) == (128, 7, 3)
    assert (cfg.slot_dim, cfg.hidden, cfg.mlp_hidden) == (64, 64, 128)
    assert cfg.layernorm == "token" and cfg.decoder_init == 8


def test_output_shapes_masks_and_recon_range() -> None:
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(tiny(resolution=32))
    assert model.family is IMAGE
    out = model({"image": squares(2, 32)})
    assert isinstance(out, ModelOutput)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert set(out.losses) == {"mse"}
    assert out.recon.shape == (2, 3, 32, 32)
    assert out.masks.shape == (2, 3, 32, 32)
    assert out.slots.shape == (2, 3, 32)
    torch.testing.assert_close(out.masks.sum(dim=1), torch.ones(2, 32, 32))
    assert out.masks.min() >= 0
    assert out.recon.min() >= 0 and out.recon.max() <= 1


def test_loss_is_mse_of_the_mask_weighted_recon_on_the_paper_scale() -> None:
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(tiny())
    image = squares(2, 16)
    torch.manual_seed(5)
    out = model({"image": image})
    torch.manual_seed(5)
    slots, attn = model.encode(image)
    recon, rgb, masks = model.decode(slots)
    torch.testing.assert_close(slots, out.slots)
    torch.testing.assert_close(recon, (masks.unsqueeze(2) * rgb).sum(1))
    expected = ((recon - (2 * image - 1)) ** 2).mean()  # images in [−1, 1], per-element mean
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.recon, ((recon + 1) / 2).clamp(0, 1))
    assert attn.shape == (2, 3, 16 * 16)


def test_deterministic_under_seed() -> None:
    image = squares(2, 16)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = SlotAttentionAutoEncoder(tiny())
        runs.append(model({"image": image}))
    torch.testing.assert_close(runs[0].loss, runs[1].loss)
    torch.testing.assert_close(runs[0].masks, runs[1].masks)


@pytest.mark.parametrize("resolution", [24, (16, 20)])
def test_non_power_of_two_resolutions(resolution) -> None:
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(tiny(resolution=resolution))
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    out = model({"image": torch.rand(2, 3, h, w)})
    assert out.recon.shape == (2, 3, h, w) and out.masks.shape == (2, 3, h, w)
    torch.testing.assert_close(out.masks.sum(dim=1), torch.ones(2, h, w))


def test_decoder_layers_follow_the_resolution() -> None:
    # log2(128 / 8) = 4 stride-2 transposed convs, then the stride-1 5×5 and the 3×3 output conv.
    convs = [m for m in SlotAttentionAutoEncoder().decoder.convs if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 4 + [(1, 1)] * 2
    assert [c.kernel_size for c in convs][-2:] == [(5, 5), (3, 3)] and convs[-1].out_channels == 4


def test_parameter_count_matches_benchmark() -> None:
    cfg = SlotAttentionConfig(resolution=128, num_slots=11, layernorm="map", qkv_bias=True)
    assert n_params(SlotAttentionAutoEncoder(cfg)) == 2_987_524
    # The paper's per-token LayerNorm replaces the 2·64·128² map-wide affine with 2·64.
    token = SlotAttentionAutoEncoder(SlotAttentionConfig(num_slots=11))
    assert n_params(token) == 2_987_524 - 2 * 64 * 128 * 128 + 2 * 64 == 890_500
    no_bias = SlotAttentionAutoEncoder(SlotAttentionConfig(num_slots=11, qkv_bias=False))
    assert n_params(no_bias) == 890_500 - 3 * 64


def test_bad_input_and_config() -> None:
    model = SlotAttentionAutoEncoder(tiny())
    with pytest.raises(ValueError, match=r"batch\['image'\] \[B, 3, 16, 16\]"):
        model({"image": torch.rand(2, 3, 32, 32)})
    with pytest.raises(ValueError, match="layernorm"):
        tiny(layernorm="batch")
    with pytest.raises(ValueError, match="masks must be 'decoder' or 'attention'"):
        tiny(masks="decoded")
    with pytest.raises(ValueError, match="resolution"):
        tiny(resolution=0)
    assert tiny(resolution=[16, 20]).hw == (16, 20)  # YAML lists


def overfit(cfg: SlotAttentionConfig, steps: int = 60) -> list[float]:
    """Losses of ``steps`` Adam steps on one fixed batch of four square scenes."""
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(cfg)
    batch = {"image": squares(4, 16, seed=1)}
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        loss = model(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("masks", ["decoder", "attention"])
def test_overfits_one_batch(masks: str) -> None:
    losses = overfit(tiny(masks=masks))
    assert min(losses[-5:]) < 0.5 * losses[0], losses


def test_attention_masks_compose_the_decoded_colours() -> None:
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(tiny(masks="attention"))
    image = squares(2, 16)
    torch.manual_seed(5)
    out = model({"image": image})
    torch.manual_seed(5)
    slots, attn = model.encode(image)
    recon, rgb, masks = model.decode(slots, attn)
    # The masks are the attention over slots, one per pixel; the decoder draws colour only.
    torch.testing.assert_close(out.masks, attn.reshape(2, 3, 16, 16))
    torch.testing.assert_close(out.masks.sum(dim=1), torch.ones(2, 16, 16))
    assert rgb.shape == (2, 3, 3, 16, 16) and model.decoder.convs[-1].out_channels == 3
    torch.testing.assert_close(recon, (masks.unsqueeze(2) * rgb).sum(1))
    torch.testing.assert_close(out.loss, ((recon - (2 * image - 1)) ** 2).mean())
    # One output channel fewer in the last 3×3 transposed conv: 32·3·3 weights and a bias.
    assert n_params(model) == n_params(SlotAttentionAutoEncoder(tiny())) - (32 * 3 * 3 + 1)
    with pytest.raises(ValueError, match="needs the attention"):
        model.decode(slots)


def test_attention_masks_put_the_attention_into_the_loss() -> None:
    # Why the option exists: with decoded masks the loss depends on where a slot attends only
    # through what the slot holds; with attention masks it also depends on the attention itself.
    # Hold the slots fixed and move only the attention: the decoded-mask loss cannot change.
    torch.manual_seed(0)
    image = squares(2, 16)
    for masks, moves in (("decoder", False), ("attention", True)):
        model = SlotAttentionAutoEncoder(tiny(masks=masks))
        slots, attn = model.encode(image)
        other = attn.roll(1, dims=1)  # the same maps, handed to other slots
        a = model.decode(slots, attn)[0]
        b = model.decode(slots, other)[0]
        assert (not torch.allclose(a, b)) == moves, masks


def test_channels_last_computes_the_same_numbers():
    # A memory layout, not a model change: same weights, same input → same loss and masks.
    torch.manual_seed(0)
    plain = SlotAttentionAutoEncoder(SlotAttentionConfig(resolution=32, num_slots=3, hidden=16, slot_dim=16, mlp_hidden=32))
    nhwc = SlotAttentionAutoEncoder(SlotAttentionConfig(resolution=32, num_slots=3, hidden=16, slot_dim=16, mlp_hidden=32,
                                                        channels_last=True))
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc.decoder.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    batch = {"image": torch.rand(2, 3, 32, 32)}
    torch.manual_seed(1)
    a = plain(batch)
    torch.manual_seed(1)
    b = nhwc(batch)
    assert torch.allclose(a.loss, b.loss, atol=1e-5) and torch.allclose(a.masks, b.masks, atol=1e-4)
