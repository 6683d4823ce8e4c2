"""The parametric transformations of DTI-Sprites: neutral at zero, exact known moves, and the
batched MLPs equal to separate ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from objdisc.models.blocks.transforms import BatchedMLP, position_theta, projective_grid, soft_clamp, transform_color


def test_soft_clamp_is_the_identity_inside_and_leaks_outside() -> None:
    x = torch.tensor([-2.0, 0.0, 0.3, 1.0, 3.0])
    torch.testing.assert_close(soft_clamp(x, 0.1), torch.tensor([-0.2, 0.0, 0.3, 1.0, 1.2]))
    torch.testing.assert_close(soft_clamp(x, 0.0), x.clamp(0, 1))


def test_colour_transformation_gain_and_bias_per_channel_extra_channels_pass() -> None:
    x = torch.rand(2, 4, 5, 5) * 0.5  # RGB + a mask channel
    beta = torch.zeros(2, 6)
    torch.testing.assert_close(transform_color(x, beta, 0.0), x)
    beta[:, 0] = -0.5  # red gain ×0.5
    beta[:, 3] = 0.25  # green bias +0.25
    out = transform_color(x, beta, 0.0)
    torch.testing.assert_close(out[:, 0], x[:, 0] / 2)
    torch.testing.assert_close(out[:, 1], x[:, 1] + 0.25)
    torch.testing.assert_close(out[:, 2:], x[:, 2:])


def test_position_and_projective_identity_and_translation() -> None:
    torch.testing.assert_close(position_theta(torch.zeros(1, 3)), torch.tensor([[[2.0, 0, 0], [0, 2.0, 0]]]))
    # The zero homography is the identity: sampling with its grid gives the image back exactly.
    image = torch.rand(1, 3, 8, 8)
    grid = projective_grid(torch.zeros(1, 9), (8, 8))
    torch.testing.assert_close(F.grid_sample(image, grid, align_corners=False), image)
    # A translation of 2/8 in sampling coordinates (one pixel) shifts the content one pixel left.
    beta = torch.zeros(1, 9)
    beta[0, 2] = 2 / 8
    shifted = F.grid_sample(image, projective_grid(beta, (8, 8)), align_corners=False)
    torch.testing.assert_close(shifted[..., :-1], image[..., 1:])
    # Position: sampling scale exp(s) + 1 on both axes (above 1: a sprite never appears larger than
    # its own frame), translation as given.
    theta = position_theta(torch.tensor([[0.5, 0.5, -0.25]]))
    s = torch.tensor(0.5).exp() + 1
    torch.testing.assert_close(theta, torch.tensor([[[s, 0, 0.5], [0, s, -0.25]]]))


def test_batched_mlp_equals_separate_mlps_and_starts_at_zero() -> None:
    torch.manual_seed(0)
    mlp = BatchedMLP(n=3, d_in=5, hidden=7, d_out=2, layers=2)
    x = torch.randn(4, 5)
    assert torch.count_nonzero(mlp(x)) == 0  # last layer at zero: the neutral transformation
    with torch.no_grad():
        for w, b in zip(mlp.weights, mlp.biases):
            w.normal_()
            b.normal_()
    out = mlp(x)
    assert out.shape == (3, 4, 2)
    for i in range(3):
        h = x
        for j, (w, b) in enumerate(zip(mlp.weights, mlp.biases)):
            h = h @ w[i] + b[i]
            if j < len(mlp.weights) - 1:
                h = h.relu()
        torch.testing.assert_close(out[i], h)
    mlp.copy_row(0, 2)
    torch.testing.assert_close(mlp(x)[0], mlp(x)[2])
