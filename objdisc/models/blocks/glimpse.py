"""Spatial-transformer glimpses (Jaderberg et al. 2015), as the glimpse and sprite models use them
(SPAIR, SPACE, GNM, MarioNette): cut a box out of an image at a fixed glimpse size, and paste a
glimpse back into an image-sized canvas.

A box is ``where = (scale_x, scale_y, shift_x, shift_y)`` in the normalised coordinates of
``F.affine_grid`` (the image spans [−1, 1] on both axes, x to the right, y down): the box is
centred at (shift_x, shift_y) and covers scale × the image on each axis. So ``scale = 1, shift = 0``
is the whole image, and a glimpse cut with ``extract`` and pasted back with ``place`` lands where
it came from (``place`` is the inverse transform; outside the box it is zero).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _theta(scale: Tensor, shift: Tensor) -> Tensor:
    """[N,2,3] affine maps glimpse coordinates → image coordinates for boxes [N,2] + [N,2]."""
    zero = torch.zeros_like(scale[:, 0])
    return torch.stack(
        [torch.stack([scale[:, 0], zero, shift[:, 0]], -1), torch.stack([zero, scale[:, 1], shift[:, 1]], -1)], dim=1
    )


def extract(image: Tensor, scale: Tensor, shift: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Glimpses [N,C,h,w] of ``image`` [N,C,H,W] in the boxes ``scale``, ``shift`` [N,2]
    (bilinear; pixels outside the image read as zero)."""
    h, w = (size, size) if isinstance(size, int) else size
    grid = F.affine_grid(_theta(scale, shift).to(image.dtype), [image.shape[0], image.shape[1], h, w], align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def place(glimpse: Tensor, scale: Tensor, shift: Tensor, size: tuple[int, int]) -> Tensor:
    """Paste glimpses [N,C,h,w] into canvases [N,C,H,W] at the boxes ``scale``, ``shift`` [N,2]:
    the inverse of ``extract``. ``scale`` must be non-zero."""
    inv_scale = 1.0 / scale
    theta = _theta(inv_scale, -shift * inv_scale).to(glimpse.dtype)
    grid = F.affine_grid(theta, [glimpse.shape[0], glimpse.shape[1], *size], align_corners=False)
    return F.grid_sample(glimpse, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def boxes(scale: Tensor, shift: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixel boxes (x0, y0, x1, y1) [...,4] of ``where`` boxes [...,2] + [...,2] in an image of
    ``size`` (H, W), for pictures and counting."""
    h, w = size
    half = scale.abs()  # the box spans shift ± scale in [−1, 1] coordinates
    x0 = (shift[..., 0] - half[..., 0] + 1) / 2 * w
    x1 = (shift[..., 0] + half[..., 0] + 1) / 2 * w
    y0 = (shift[..., 1] - half[..., 1] + 1) / 2 * h
    y1 = (shift[..., 1] + half[..., 1] + 1) / 2 * h
    return torch.stack([x0, y0, x1, y1], dim=-1)
