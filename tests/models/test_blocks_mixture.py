"""Blocks of the mixture models: the mixture likelihood and stick-breaking masks, the spatial-broadcast
decoder, the U-Net, and Efficient-MORL's softplus GECO."""

import math

import pytest
import torch

from objdisc.models.blocks.broadcast import SpatialBroadcastDecoder, coordinate_channels
from objdisc.models.blocks.geco import SoftplusGECO
from objdisc.models.blocks.mixture import kl_normal, mixture_nll, stick_breaking
from objdisc.models.blocks.unet import UNet, up_widths


def test_mixture_nll_pixel_and_channel_forms():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 4, 5)
    means = torch.rand(2, 3, 3, 4, 5)
    log_masks = torch.randn(2, 3, 1, 4, 5).log_softmax(1)
    std = 0.2
    normal = torch.distributions.Normal(means, std)
    ll = normal.log_prob(image[:, None])  # [B,K,C,H,W]
    pixel = -torch.logsumexp(log_masks + ll.sum(2, keepdim=True), dim=1).sum((1, 2, 3))
    channel = -torch.logsumexp(log_masks + ll, dim=1).sum((1, 2, 3))
    torch.testing.assert_close(mixture_nll(image, means, log_masks, std, "pixel")[0], pixel)
    torch.testing.assert_close(mixture_nll(image, means, log_masks, std, "channel")[0], channel)
    # Without the 2π constant: shifted by ½ log 2π per element.
    shift = 0.5 * math.log(2 * math.pi) * 3 * 4 * 5
    torch.testing.assert_close(mixture_nll(image, means, log_masks, std, "pixel", normalised=False)[0], pixel - shift)
    # Per-slot σ: slot 0 gets its own.
    stds = torch.tensor([0.09, 0.15, 0.15])
    ll = torch.distributions.Normal(means, stds.view(1, 3, 1, 1, 1)).log_prob(image[:, None])
    expected = -torch.logsumexp(log_masks + ll.sum(2, keepdim=True), dim=1).sum((1, 2, 3))
    torch.testing.assert_close(mixture_nll(image, means, log_masks, stds, "pixel")[0], expected)


def test_stick_breaking_masks_sum_to_one():
    torch.manual_seed(0)
    logits = [torch.randn(2, 1, 3, 3) * 3 for _ in range(4)]
    pairs = [(torch.nn.functional.logsigmoid(x), torch.nn.functional.logsigmoid(-x)) for x in logits]
    log_masks, log_scope = stick_breaking(pairs)
    assert len(log_masks) == 5
    masks = torch.stack(log_masks).exp()
    torch.testing.assert_close(masks.sum(0), torch.ones(2, 1, 3, 3))
    a = torch.sigmoid(logits[0]), torch.sigmoid(logits[1])
    torch.testing.assert_close(masks[1], (1 - a[0]) * a[1])
    torch.testing.assert_close(log_masks[-1], log_scope)


def test_kl_normal_matches_torch():
    mu, std = torch.randn(5), torch.rand(5) + 0.1
    p_mu, p_std = torch.randn(5), torch.rand(5) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mu, std), torch.distributions.Normal(p_mu, p_std))
    torch.testing.assert_close(kl_normal(mu, std, p_mu, p_std), expected)
    torch.testing.assert_close(kl_normal(torch.zeros(3), torch.ones(3)), torch.zeros(3))


def test_broadcast_decoder_valid_convs_land_on_the_image():
    dec = SpatialBroadcastDecoder(8, (12, 10), [16, 16, 16, 16], kernel=3, final_kernel=1)
    assert dec.grid_hw == (20, 18)  # 4 valid 3×3 convs eat 8 pixels
    assert dec.convs[0].in_channels == 10  # latent + x, y
    assert dec(torch.randn(3, 8)).shape == (3, 4, 12, 10)
    emb = SpatialBroadcastDecoder(8, (12, 12), [16] * 4, kernel=3, final_kernel=3, activation="elu", coords="embed")
    assert emb.grid_hw == (22, 22) and emb.convs[0].in_channels == 8
    assert emb(torch.randn(2, 8)).shape == (2, 4, 12, 12)
    small = SpatialBroadcastDecoder(8, (16, 16), [4], decode_hw=(8, 8))
    assert small.grid_hw == (10, 10) and small(torch.randn(2, 8)).shape == (2, 4, 16, 16)
    # The coordinates vary along their own axis only.
    grid = coordinate_channels(3, 4)
    assert torch.equal(grid[0, 0, 0], torch.linspace(-1, 1, 4)) and torch.equal(grid[0, 1, :, 0], torch.linspace(-1, 1, 3))


def test_broadcast_decoder_is_translation_free_in_the_latent():
    """Every pixel is decoded from the same latent: identical latents give identical images."""
    dec = SpatialBroadcastDecoder(4, (8, 8), [8, 8], kernel=3)
    z = torch.randn(1, 4).expand(2, 4)
    out = dec(z)
    torch.testing.assert_close(out[0], out[1])


def test_unet_shapes_widths_and_skips():
    assert up_widths([64, 128, 256, 512, 512, 512]) == [512, 512, 256, 128, 64, 64]  # MONet, 6 blocks
    assert up_widths([64, 64, 64, 128, 128, 128]) == [128, 128, 64, 64, 64, 64]  # GENESIS-v2, 6 blocks
    assert up_widths([64, 64, 128, 128, 128]) == [128, 128, 64, 64, 64]
    assert up_widths([64, 128, 128, 128]) == [128, 128, 64, 64]
    net = UNet(4, [8, 16, 16], (16, 16), "instance", mlp_hidden=32, out_channels=1)
    assert net.bottleneck_shape == (16, 4, 4)
    assert net(torch.randn(2, 4, 16, 16)).shape == (2, 1, 16, 16)
    assert [b[0].in_channels for b in net.up] == [32, 32, 16]  # concatenated skips
    gn = UNet(3, [8, 8, 16], (8, 8), "group", out_channels=None)
    assert isinstance(gn.down[0][1], torch.nn.GroupNorm) and gn(torch.randn(1, 3, 8, 8)).shape == (1, 8, 8, 8)
    with pytest.raises(ValueError, match="divisible"):
        UNet(3, [8, 8, 8], (10, 10))


def test_softplus_geco_warm_start_then_multiplier_against_the_constraint():
    geco = SoftplusGECO(goal=10.0, step_size=0.1, alpha=0.5, beta_init=0.55, beta_min=0.55, warm_start=2)
    err, kl = torch.tensor(20.0, requires_grad=True), torch.tensor(3.0)
    torch.testing.assert_close(geco.loss(err, kl, step=0, kl_weight=1.0), torch.tensor(23.0))  # plain ELBO
    geco.update(20.0, step=0)
    geco.update(20.0, step=1)
    assert not bool(geco.started) and float(geco.beta) == 0.55  # nothing moves in the warm start
    geco.update(20.0, step=2)  # starts the moving average, no step yet
    assert bool(geco.started) and float(geco.err_ema) == 20.0 and float(geco.beta) == 0.55
    geco.update(30.0, step=3)  # EMA 25: violated by 15 → b grows by 0.1 · 15
    assert float(geco.err_ema) == pytest.approx(25.0)
    assert float(geco.beta) == pytest.approx(0.55 + 1.5)
    loss = geco.loss(err, kl, step=3)
    loss.backward()
    lam = math.log1p(math.exp(0.55 + 1.5))
    assert float(err.grad) == pytest.approx(lam)  # λ = softplus(b) weighs the reconstruction
    assert float(loss.detach()) == pytest.approx(3.0 + lam * (20.0 - 10.0))
    for _ in range(20):
        geco.update(0.0, step=4)  # met: b falls, but never below b_min
    assert float(geco.beta) == pytest.approx(0.55)
    copy = SoftplusGECO(goal=10.0, step_size=0.1)
    copy.load_state_dict(geco.state_dict())
    assert float(copy.err_ema) == float(geco.err_ema) and bool(copy.started)
