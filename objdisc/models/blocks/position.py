"""Soft position embedding (Slot Attention paper): a learned linear map of a 4-channel coordinate
grid [y, x, 1 − y, 1 − x] added to channels-last feature maps. The "inverse" coordinates let a
bias-free reading of the grid reach both edges with positive weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def build_grid(h: int, w: int, device: torch.device | str | None = None) -> Tensor:
    """[1, h, w, 4] grid of [y, x, 1 − y, 1 − x], each coordinate linspace(0, 1) over the pixels."""
    ys = torch.linspace(0.0, 1.0, h, device=device)
    xs = torch.linspace(0.0, 1.0, w, device=device)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)  # [h, w, 2]: (y, x)
    return torch.cat([grid, 1.0 - grid], dim=-1).unsqueeze(0)


class SoftPositionEmbed(nn.Module):
    """Adds Linear(4 → channels) of the coordinate grid to ``inputs`` [B, h, w, channels]."""

    def __init__(self, channels: int, hw: tuple[int, int]) -> None:
        super().__init__()
        self.hw = tuple(hw)
        self.proj = nn.Linear(4, channels)
        # Not persistent: it is a function of hw, so checkpoints stay free of it.
        self.register_buffer("grid", build_grid(*self.hw), persistent=False)

    def forward(self, inputs: Tensor) -> Tensor:
        if tuple(inputs.shape[1:3]) != self.hw or inputs.shape[-1] != self.proj.out_features:
            raise ValueError(
                f"SoftPositionEmbed expects [B, {self.hw[0]}, {self.hw[1]}, {self.proj.out_features}], "
                f"got {tuple(inputs.shape)}"
            )
        return inputs + self.proj(self.grid)
