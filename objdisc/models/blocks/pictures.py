"""Composing model pictures: a family's default grid with model-specific panels below it
(DTI-Sprites' and MarioNette's learned sprites, SLATE's token reconstructions and attention)."""

from __future__ import annotations

import numpy as np


def stack_pictures(*pictures: np.ndarray) -> np.ndarray:
    """uint8 pictures [H_i, W_i, 3] one above the other, padded with white to the widest."""
    width = max(p.shape[1] for p in pictures)
    padded = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in pictures]
    return np.concatenate(padded, axis=0)


__all__ = ["stack_pictures"]
