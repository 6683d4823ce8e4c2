"""Scene → 2D model input: pick a view, crop, resize (images bilinear with antialias, masks nearest).

Two crop conventions: a fixed box (``crop`` = [top, bottom, left,
right], e.g. Slot Attention's 29:221 × 64:256 on CLEVR) or ClevrTex's centre crop of side
``int(f · min(H, W))``. 3D models use ``objdisc.data.views`` instead.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from objdisc.config import ImageConfig
from objdisc.data.schema import Scene


def crop_box(height: int, width: int, cfg: ImageConfig) -> tuple[int, int, int, int]:
    """[top, bottom, left, right] of the crop for an H×W view."""
    if cfg.crop is not None and cfg.center_crop is not None:
        raise ValueError("image: give either crop or center_crop, not both")
    if cfg.crop is not None:
        top, bottom, left, right = cfg.crop
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise ValueError(f"image.crop {cfg.crop} does not fit a {height}x{width} view")
        return top, bottom, left, right
    if cfg.center_crop is not None:
        side = int(cfg.center_crop * min(height, width))
        top, left = (height - side) // 2, (width - side) // 2
        return top, top + side, left, left + side
    return 0, height, 0, width


def image_sample(scene: Scene, cfg: ImageConfig, view: int = 0) -> dict[str, Tensor]:
    """One view of ``scene`` as ``image`` float [3,S,S] in [0,1] and ``mask`` long [S,S] (if any)."""
    image = scene["image"][view]
    top, bottom, left, right = crop_box(image.shape[0], image.shape[1], cfg)
    out = {"image": _resize_image(image[top:bottom, left:right], cfg.size)}
    if "mask" in scene:
        out["mask"] = _resize_mask(scene["mask"][view, top:bottom, left:right], cfg.size)
    return out


def pick_view(scene: Scene, cfg: ImageConfig, generator: torch.Generator | None) -> int:
    views = scene["image"].shape[0]
    if cfg.train_view == "random" and generator is not None and views > 1:
        return int(torch.randint(views, (1,), generator=generator))
    return 0


def _resize_image(image: np.ndarray, size: int) -> Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    if x.shape[1:] != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        x = x.clamp_(0.0, 1.0)
    return x


def _resize_mask(mask: np.ndarray, size: int) -> Tensor:
    m = torch.from_numpy(np.ascontiguousarray(mask)).long()
    if m.shape != (size, size):
        m = F.interpolate(m[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
    return m
