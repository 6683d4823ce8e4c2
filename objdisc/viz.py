"""Pictures of what a model sees and decides: segmentation colours, overlays, labelled grids.

numpy + PIL only, so that pictures can be drawn in a training loop or a test without a plotting
stack. Every function accepts numpy arrays or torch tensors (converted on the way in) and returns
uint8 RGB arrays [H,W,3]; ``save_png`` writes them atomically.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from objdisc.io import atomic_write

# Grid colours: white background, dark text (readable on paper and on screen).
_BACKGROUND = 255
_TEXT = (20, 20, 20)
# Small images are upscaled (nearest) until their height reaches at least this many pixels, so a
# 32 × 32 CLEVR crop is still legible next to its header text.
_MIN_CELL_HEIGHT = 96


def as_numpy(x: Any) -> np.ndarray:
    """numpy view of an array or a torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            x = x.float()
    return np.asarray(x)


def to_image(x: Any) -> np.ndarray:
    """uint8 RGB [H,W,3] from [H,W,3], [3,H,W], [H,W] or [1,H,W]; floats are taken in [0,1]."""
    a = as_numpy(x)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)  # channel-first → channel-last
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an image [H,W,3], [3,H,W] or [H,W], got shape {a.shape}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a, 0, 255).astype(np.uint8)
    return np.round(np.clip(np.nan_to_num(a.astype(np.float64)), 0.0, 1.0) * 255.0).astype(np.uint8)


def palette(n: int) -> np.ndarray:
    """uint8 [n,3] segmentation colours: 0 = black (background), then n − 1 hues.

    As the osrt/ObSuRF renders: colour k ≥ 1 is HSV((k − 1)/(n − 1), 0.45, 0.8), scaled to 0..255
    and truncated, so the same n always gives the same colours.
    """
    if n < 1:
        raise ValueError(f"palette needs at least one colour, got n={n}")
    colours = np.zeros((n, 3), dtype=np.uint8)
    for k in range(1, n):
        rgb = colorsys.hsv_to_rgb((k - 1) / (n - 1), 0.45, 0.8)
        colours[k] = (np.asarray(rgb) * 255.0).astype(np.uint8)
    return colours


def colorize_ids(ids: Any, n: int | None = None) -> np.ndarray:
    """uint8 [H,W,3]: each pixel's id k painted with ``palette(n)[k]`` (n defaults to max id + 1)."""
    ids = as_numpy(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"colorize_ids needs integer ids, got dtype {ids.dtype}")
    top = int(ids.max()) if ids.size else 0
    n = top + 1 if n is None else n
    if ids.size and (int(ids.min()) < 0 or top >= n):
        raise ValueError(f"ids must lie in [0, {n}), got range [{int(ids.min())}, {top}]")
    return palette(n)[ids]


def overlay(image: Any, ids: Any, alpha: float = 0.5, n: int | None = None) -> np.ndarray:
    """The image with each object (id > 0) tinted by its palette colour; background left as is."""
    img = to_image(image).astype(np.float64)
    ids = as_numpy(ids)
    if ids.shape != img.shape[:2]:
        raise ValueError(f"ids {ids.shape} and image {img.shape[:2]} differ in size")
    colours = colorize_ids(ids, n).astype(np.float64)
    tint = (ids > 0)[..., None] * alpha
    return np.round((1.0 - tint) * img + tint * colours).astype(np.uint8)


def draw_boxes(image: Any, boxes: Any, shown: Any | None = None, n: int | None = None) -> np.ndarray:
    """The image with box k outlined in palette colour k + 1 (the slot's segmentation colour).

    ``boxes`` [K,4] are (x0, y0, x1, y1) in pixels; ``shown`` [K] bool picks the boxes to draw
    (glimpse models: the present cells). Boxes are clipped to the image."""
    img = Image.fromarray(to_image(image))
    boxes = as_numpy(boxes).astype(np.float64).reshape(-1, 4)
    keep = np.ones(len(boxes), bool) if shown is None else as_numpy(shown).astype(bool).reshape(-1)
    colours = palette(max(n or 0, len(boxes)) + 1)
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        if not keep[k]:
            continue
        x0, x1 = sorted((min(max(x0, 0), w - 1), min(max(x1, 0), w - 1)))
        y0, y1 = sorted((min(max(y0, 0), h - 1), min(max(y1, 0), h - 1)))
        draw.rectangle([round(x0), round(y0), round(x1), round(y1)], outline=tuple(int(c) for c in colours[k + 1]))
    return np.asarray(img)


def image_grid(
    rows: Sequence[Sequence[Any]],
    labels: Sequence[str] | None = None,
    pad: int = 2,
    scale: int | None = None,
    row_labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Tile images into one uint8 picture: ``rows[i][j]`` is the cell in row i, column j.

    Cells are as large as the largest image (smaller ones sit top-left on white); ``scale``
    upscales every image by an integer factor with nearest-neighbour sampling (default: enough for
    small images to be readable). ``labels`` head the columns, ``row_labels`` the rows, drawn with
    PIL's default font. Rows may have different lengths.
    """
    if not rows or not any(len(r) for r in rows):
        raise ValueError("image_grid needs at least one image")
    images = [[to_image(im) for im in row] for row in rows]
    cell_h = max(im.shape[0] for row in images for im in row)
    cell_w = max(im.shape[1] for row in images for im in row)
    if scale is None:
        scale = max(1, math.ceil(_MIN_CELL_HEIGHT / cell_h)) if cell_h < _MIN_CELL_HEIGHT else 1
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    cell_h, cell_w = cell_h * scale, cell_w * scale
    n_rows, n_cols = len(images), max(len(r) for r in images)
    if labels is not None and len(labels) > n_cols:
        raise ValueError(f"{len(labels)} column labels for {n_cols} columns")
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"{len(row_labels)} row labels for {n_rows} rows")

    font = ImageFont.load_default()
    header_h = _text_height(font, labels) + 2 * pad if labels else 0
    left_w = _text_width(font, row_labels) + 2 * pad if row_labels else 0
    height = header_h + n_rows * (cell_h + pad) + pad
    width = left_w + n_cols * (cell_w + pad) + pad
    canvas = np.full((height, width, 3), _BACKGROUND, dtype=np.uint8)
    for i, row in enumerate(images):
        y = header_h + pad + i * (cell_h + pad)
        for j, im in enumerate(row):
            x = left_w + pad + j * (cell_w + pad)
            big = im.repeat(scale, axis=0).repeat(scale, axis=1)
            canvas[y : y + big.shape[0], x : x + big.shape[1]] = big

    if labels or row_labels:
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        for j, text in enumerate(labels or []):
            x = left_w + pad + j * (cell_w + pad)
            draw.text((x, pad), str(text), fill=_TEXT, font=font)
        for i, text in enumerate(row_labels or []):
            y = header_h + pad + i * (cell_h + pad) + cell_h // 2
            draw.text((pad, y), str(text), fill=_TEXT, font=font, anchor="lm")
        canvas = np.asarray(picture)
    return canvas


def slot_grid(
    image: Any,
    recon: Any,
    masks: Any,
    true_ids: Any | None = None,
    slot_recons: Any | None = None,
    pad: int = 2,
    scale: int | None = None,
) -> np.ndarray:
    """One row per scene: input | reconstruction | predicted segmentation | true segmentation |
    each slot's recon·mask + (1 − mask)·white (the Slot Attention picture of HHousen's trainer).

    ``image``/``recon`` [3,H,W] or [H,W,3] (or batched [B,...]), ``masks`` soft [K,H,W]
    (or [B,K,H,W]), ``true_ids`` int [H,W] (or [B,H,W]). The predicted segmentation is
    argmax over slots + 1, so slot k and true object k share palette colour k + 1 and 0 stays
    black for background. ``slot_recons`` [K,3,H,W] are per-slot decodings where the model has
    them; otherwise each slot shows the combined reconstruction under its mask.
    """
    masks_np = as_numpy(masks)
    if as_numpy(image).ndim == 3:  # one scene: give everything a batch axis of one
        image, recon, masks_np = [image], [recon], masks_np[None]
        true_ids = None if true_ids is None else [true_ids]
        slot_recons = None if slot_recons is None else [slot_recons]
    if masks_np.shape[0] != len(image):
        raise ValueError(f"masks hold {masks_np.shape[0]} scenes, images {len(image)}")
    num_slots = masks_np.shape[1]
    n_colours = num_slots + 1
    if true_ids is not None:
        n_colours = max(n_colours, max(int(as_numpy(t).max()) for t in true_ids) + 1)

    rows = []
    for b in range(masks_np.shape[0]):
        img, rec = to_image(image[b]), to_image(recon[b])
        m = masks_np[b].reshape(num_slots, *img.shape[:2]).astype(np.float64)  # drops [K,1,H,W] axes
        row = [img, rec, colorize_ids(m.argmax(0) + 1, n_colours)]
        if true_ids is not None:
            ids = as_numpy(true_ids[b]).reshape(img.shape[:2]).astype(np.int64)
            row.append(colorize_ids(ids, n_colours))
        for k in range(num_slots):
            source = rec if slot_recons is None else to_image(slot_recons[b][k])
            mk = m[k][..., None]
            row.append(np.round(source * mk + 255.0 * (1.0 - mk)).astype(np.uint8))
        rows.append(row)
    labels = ["input", "recon", "pred seg"] + (["true seg"] if true_ids is not None else [])
    labels += [f"slot {k}" for k in range(num_slots)]
    return image_grid(rows, labels=labels, pad=pad, scale=scale)


def save_png(path: str | os.PathLike, array: Any) -> Path:
    """Write an image (anything ``to_image`` accepts) as PNG: temp file in the same folder, then
    rename, so a reader never sees half a picture."""
    path = Path(path)
    picture = Image.fromarray(to_image(array))
    with atomic_write(path, "wb") as f:
        picture.save(f, format="PNG")
    return path


def _text_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, texts: Sequence[str]) -> int:
    return max(font.getbbox(str(t))[3] for t in texts) if texts else 0


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, texts: Sequence[str]) -> int:
    return max(font.getbbox(str(t))[2] for t in texts) if texts else 0
