"""The U-Net of MONet's attention network and GENESIS-v2's encoder (Burgess et al. 2019, appendix B.2;
Engelcke et al. 2021): n blocks down, a fully connected bottleneck, n blocks up with skips.

    x ─▶ [conv 3×3 → norm → ReLU] ─skip₀─▶ ½ ─▶ … ─▶ [block n−1] ─skip_{n−1}─▶ MLP ─▶ reshape
      ─▶ [cat(·, skip_{n−1}) → conv → norm → ReLU] ─▶ 2× ─▶ … ─▶ [cat(·, skip₀) → block] ─▶ (1×1 conv)

Every block is a bias-free 3×3 convolution, a normalisation (MONet: instance norm; GENESIS-v2:
group norm with 8 groups) and a ReLU; resizing is nearest-neighbour, by ½ after every down block
but the last and by 2 after every up block but the last. The bottleneck MLP maps the flattened last
down block through two hidden layers (128) back to its own shape, with ReLUs after every layer.

The down widths are given; the up widths mirror them: the first up block keeps the last width,
then up block j (1 ≤ j ≤ n − 2) has the width of down block n − 2 − j, and the last the first width.
That reproduces both papers' tables (MONet 6 blocks of 64·min(2^i, 8): 64, 128, 256, 512, 512, 512 /
512, 512, 256, 128, 64, 64; GENESIS-v2: c, c, c, 2c, 2c, 2c / 2c, 2c, c, c, c, c).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def up_widths(down: Sequence[int]) -> list[int]:
    n = len(down)
    if n == 1:
        return [down[0]]
    return [down[-1]] + [down[n - 2 - j] for j in range(1, n - 1)] + [down[0]]


class UNetBlock(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, norm: Literal["instance", "group"], groups: int = 8) -> None:
        layer = nn.InstanceNorm2d(out_ch, affine=True) if norm == "instance" else nn.GroupNorm(groups, out_ch)
        super().__init__(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), layer, nn.ReLU())


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        image_hw: tuple[int, int],
        norm: Literal["instance", "group"] = "instance",
        mlp_hidden: int = 128,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        n = len(widths)
        h, w = image_hw
        scale = 2 ** (n - 1)
        if h % scale or w % scale:
            raise ValueError(f"a U-Net of {n} blocks halves the image {n - 1} times: {h}×{w} must be divisible by {scale}")
        self.bottleneck_shape = (widths[-1], h // scale, w // scale)
        self.down = nn.ModuleList()
        in_ch = in_channels
        for width in widths:
            self.down.append(UNetBlock(in_ch, width, norm))
            in_ch = width
        flat = widths[-1] * (h // scale) * (w // scale)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, mlp_hidden), nn.ReLU(),
            nn.Linear(mlp_hidden, mlp_hidden), nn.ReLU(),
            nn.Linear(mlp_hidden, flat), nn.ReLU(),
        )  # fmt: skip
        self.up = nn.ModuleList()
        for j, width in enumerate(up_widths(widths)):
            self.up.append(UNetBlock(in_ch + widths[n - 1 - j], width, norm))
            in_ch = width
        self.out_channels = in_ch if out_channels is None else out_channels
        self.output = nn.Conv2d(in_ch, out_channels, 1) if out_channels is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            skips.append(x)
            if i < len(self.down) - 1:
                x = F.interpolate(x, scale_factor=0.5, mode="nearest")
        x = self.mlp(x).view(x.shape[0], *self.bottleneck_shape)
        for j, block in enumerate(self.up):
            x = block(torch.cat([x, skips[-1 - j]], dim=1))
            if j < len(self.up) - 1:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.output(x)


__all__ = ["UNet", "UNetBlock", "up_widths"]
