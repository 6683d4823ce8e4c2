"""Tiny scenes the model tests train on: known objects, so that a test can tell a model that learns."""

from __future__ import annotations

import torch


def squares(n: int, size: int = 32, seed: int = 0, background: float = 0.4) -> torch.Tensor:
    """[n, 3, size, size] images in [0, 1]: a grey background with two coloured squares of side
    size/4 each, at seeded random places (they may overlap)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, size, size), background)
    side = size // 4
    for i in range(n):
        for _ in range(2):
            y, x = torch.randint(0, size - side, (2,), generator=g).tolist()
            images[i, :, y : y + side, x : x + side] = torch.rand(3, 1, 1, generator=g)
    return images
