"""Spatial-transformer glimpses (Jaderberg et al. 2015), as the glimpse and sprite models use them
(SPAIR, SPACE, GNM, MarioNette): cut a box out of an image at a fixed glimpse size, and paste a
glimpse back into an image-sized canvas.

A box is ``where = (scale_x, scale_y, shift_x, shift_y)`` in the normalised coordinates of
``F.affine_grid`` (the image spans [−1, 1] on both axes, x to the right, y down): the box is
centred at (shift_x, shift_y) and covers scale × the image on each axis. So ``scale = 1, shift = 0``
is the whole image, and a glimpse cut with ``extract`` and pasted back with ``place`` lands where
it came from (``place`` is the inverse transform; outside the box it is zero).

The glimpse models (SPAIR, SPACE, GNM) put one box in each cell of a G_h × G_w grid: a box's centre
is given in cell units, u ∈ [−½, 1½] on each axis (the cell spans [0, 1], so a box may centre up to
half a cell beyond its own), and ``cell_shift`` turns it into image coordinates. ``extract_cells``
and ``place_cells`` apply ``extract``/``place`` to every cell of a batch at once.
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


def boxes(scale: Tensor, shift: Tensor, size: tuple[int, int], *, clip: bool = False) -> Tensor:
    """Pixel boxes (x0, y0, x1, y1) [...,4] of ``where`` boxes [...,2] + [...,2] in an image of
    ``size`` (H, W), for pictures and counting; ``clip`` clips them to the image."""
    h, w = size
    half = scale.abs()  # the box spans shift ± scale in [−1, 1] coordinates
    x0 = (shift[..., 0] - half[..., 0] + 1) / 2 * w
    x1 = (shift[..., 0] + half[..., 0] + 1) / 2 * w
    y0 = (shift[..., 1] - half[..., 1] + 1) / 2 * h
    y1 = (shift[..., 1] + half[..., 1] + 1) / 2 * h
    out = torch.stack([x0, y0, x1, y1], dim=-1)
    if clip:
        limit = out.new_tensor([w, h, w, h])
        out = torch.minimum(out.clamp_min(0.0), limit)
    return out


def cell_offsets(grid: tuple[int, int], device=None, dtype=None) -> Tensor:
    """[G_h·G_w, 2] (column, row) index of every cell, cells in raster order (row by row)."""
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    return torch.stack([cols.flatten(), rows.flatten()], dim=-1).to(dtype or torch.get_default_dtype())


def cell_shift(local: Tensor, grid: tuple[int, int]) -> Tensor:
    """Box centres in image coordinates [..., N, 2] (x, y) from centres in cell units ``local``
    [..., N, 2] of the N = G_h·G_w cells (raster order): cell (r, c) spans [c, c + 1] × [r, r + 1]
    in cell units, so ``local = ½`` is the cell's centre."""
    gh, gw = grid
    offsets = cell_offsets(grid, local.device, local.dtype)
    cells = local.new_tensor([gw, gh])
    return 2.0 * (offsets + local) / cells - 1.0


def extract_cells(image: Tensor, scale: Tensor, shift: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Glimpses [B,N,C,h,w] of ``image`` [B,C,H,W] in N boxes per image (``scale``, ``shift`` [B,N,2])."""
    b, n = scale.shape[:2]
    images = image.unsqueeze(1).expand(-1, n, -1, -1, -1).flatten(0, 1)
    out = extract(images, scale.flatten(0, 1), shift.flatten(0, 1), size)
    return out.unflatten(0, (b, n))


def place_cells(glimpses: Tensor, scale: Tensor, shift: Tensor, size: tuple[int, int]) -> Tensor:
    """Glimpses [B,N,C,h,w] pasted into N image-sized canvases [B,N,C,H,W] at their boxes."""
    b, n = glimpses.shape[:2]
    out = place(glimpses.flatten(0, 1), scale.flatten(0, 1), shift.flatten(0, 1), size)
    return out.unflatten(0, (b, n))


def with_background_slot(out):
    """The ``ModelOutput`` of a glimpse model redrawn with its background as slot 0, for pictures:
    masks get the background channel 1 − Σ masks (``metrics.with_background``), ``slot_rgb`` the
    background image (``extras["background"]``), and boxes/presence an empty first row so that box
    k is drawn in the colour of its segment. Unchanged when there is no background or no slot RGB."""
    import dataclasses

    from objdisc.metrics import with_background

    background = out.extras.get("background")
    if out.masks_have_background or background is None or out.slot_rgb is None:
        return out
    b = out.masks.shape[0]
    changes = {
        "masks": with_background(out.masks),
        "masks_have_background": True,
        "slot_rgb": torch.cat([background[:, None].to(out.slot_rgb.dtype), out.slot_rgb], dim=1),
    }
    if out.boxes is not None:
        changes["boxes"] = torch.cat([out.boxes.new_zeros(b, 1, 4), out.boxes], dim=1)
        if out.presence is not None:
            changes["presence"] = torch.cat([out.presence.new_zeros(b, 1), out.presence], dim=1)
    return dataclasses.replace(out, **changes)


def picture_with_background_slot(model, batch, out, limit: int = 8):
    """A glimpse model's ``picture``: the family's grid (input, reconstruction with the present
    cells' boxes, segmentations, each cell's RGB·mask) with the background as slot 0. Assign it
    in the class body (``picture = glimpse.picture_with_background_slot``)."""
    return model.family.picture(model, batch, with_background_slot(out), limit)
