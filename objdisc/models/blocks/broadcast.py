"""Spatial-broadcast decoder (Watters et al. 2019) as MONet, IODINE and Efficient-MORL use it.

    z [N, D] ─▶ tiled over an (H + p) × (W + p) grid ─▶ + coordinates ─▶ valid convs ─▶ [N, out, H, W]

The convolutions have no padding, so the grid is larger than the image by p = Σ (kernel − 1) and the
output lands exactly on H × W without border effects. Coordinates are either concatenated as two
channels x, y ∈ [−1, 1] (MONet, IODINE: the first conv takes D + 2 channels) or, as in
Efficient-MORL, a learned linear map of the four-channel grid [y, x, 1 − y, 1 − x] added to the
tiled latent (``objdisc.models.blocks.position.SoftPositionEmbed``).

``decode_hw`` (a CPU economy, not in the papers) decodes on a smaller grid and resizes the output
bilinearly to ``out_hw``: the cost of a broadcast decoder grows with the pixels it decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objdisc.models.blocks.position import SoftPositionEmbed

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU}


def coordinate_channels(h: int, w: int, device=None, dtype=None) -> Tensor:
    """[1, 2, h, w]: x (varying along the width) then y, each linspace(−1, 1)."""
    ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y])[None]


class SpatialBroadcastDecoder(nn.Module):
    """``channels``: the hidden convs' widths (each ``kernel``×``kernel``, valid, followed by the
    activation); then a ``final_kernel`` conv to ``out_channels`` (valid too, no activation)."""

    def __init__(
        self,
        latent_dim: int,
        out_hw: tuple[int, int],
        channels: Sequence[int],
        kernel: int = 3,
        final_kernel: int = 1,
        out_channels: int = 4,
        activation: Literal["relu", "elu"] = "relu",
        coords: Literal["concat", "embed"] = "concat",
        decode_hw: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.out_hw = tuple(out_hw)
        self.decode_hw = tuple(decode_hw) if decode_hw else self.out_hw
        pad = len(channels) * (kernel - 1) + final_kernel - 1
        self.grid_hw = (self.decode_hw[0] + pad, self.decode_hw[1] + pad)
        self.coords = coords
        if coords == "concat":
            self.register_buffer("grid", coordinate_channels(*self.grid_hw), persistent=False)
            in_ch = latent_dim + 2
        elif coords == "embed":
            self.position = SoftPositionEmbed(latent_dim, self.grid_hw)
            in_ch = latent_dim
        else:
            raise ValueError(f"coords must be 'concat' or 'embed', got {coords!r}")
        layers: list[nn.Module] = []
        for width in channels:
            layers += [nn.Conv2d(in_ch, width, kernel), ACTIVATIONS[activation]()]
            in_ch = width
        layers.append(nn.Conv2d(in_ch, out_channels, final_kernel))
        self.convs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """z [N, D] → [N, out_channels, H, W]."""
        n, d = z.shape
        h, w = self.grid_hw
        if self.coords == "concat":
            x = torch.cat([z[:, :, None, None].expand(n, d, h, w), self.grid.to(z.dtype).expand(n, -1, -1, -1)], dim=1)
        else:
            x = self.position(z[:, None, None, :].expand(n, h, w, d)).permute(0, 3, 1, 2)
        out = self.convs(x.contiguous())
        if self.decode_hw != self.out_hw:
            out = F.interpolate(out, size=self.out_hw, mode="bilinear", align_corners=False)
        return out


__all__ = ["SpatialBroadcastDecoder", "coordinate_channels"]
