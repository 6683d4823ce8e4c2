"""Scene → the "views" sample of the 3D models (SRT, OSRT, ObSuRF): input views plus target rays.

One canonical scene (``objdisc.data.schema``) becomes one sample with the keys of the layout in
``objdisc.models.base.SceneModel`` (without the batch axis; the loader stacks samples with
``default_collate``). Rays are always derived from ``cam2world`` + ``intrinsics`` with
``objdisc.geometry.pixel_rays``, so every dataset reaches the models in one convention.

What the reference loaders (stelzner/srt, stelzner/osrt, stelzner/obsurf) do, and the knob that
reproduces it:

* K input views, drawn without replacement (``num_input_views``; NMR and CLEVR3D 1, MSN 5).
* Target rays drawn from the other views (``targets="others"``: NMR, MSN) or from every view,
  the input view included (``targets="all"``: CLEVR3D / ObSuRF-MSN); without replacement, with
  replacement only when there are fewer pixels than rays (``sample_with_replacement_if_short``).
  ``num_target_rays=0`` takes every target pixel in order (the references' ``--full-scale``
  evaluation), so the target views can be reshaped back into images.
* ``downsample`` n strides the *input* image, rays, masks and depths as ``x[s//2::s, s//2::s]``
  with s = 2ⁿ (srt/osrt CLEVR3D: n = 1, 240×320 → 120×160); targets stay at full resolution.
* ``canonical``: SRT's frame in which the first input camera sits at the origin looking down +z,
  level with the world's up axis (+z). Everything positional in the sample (camera positions, rays,
  ``input_cam2world``) is expressed in it and ``transform`` holds the world → model map.

All randomness comes from the ``generator`` passed in, so a sample is a pure function of
(scene, config, generator state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from objdisc.data.schema import Scene
from objdisc.geometry import canonical_transform, centre_ray, pixel_rays, stride_intrinsics, transform_points


@dataclass
class ViewsConfig:
    """How a scene is cut into input views and target rays (defaults: the srt/osrt loader defaults)."""

    num_input_views: int = 1  # K
    num_target_rays: int = 2048  # P (srt/osrt loader default; configs 2304-8192); 0: every target pixel
    targets: Literal["others", "all"] = "others"  # "all": CLEVR3D convention, input view included
    downsample: int = 0  # input views strided by 2**downsample from offset 2**downsample // 2
    canonical: bool = False  # SRT canonical frame of the first input camera
    sample_with_replacement_if_short: bool = True  # False: fewer pixels than rays is an error
    input_view_ids: tuple[int, ...] | None = None  # fixed input views (evaluation); None: random

    def __post_init__(self) -> None:
        if self.input_view_ids is not None:
            self.input_view_ids = tuple(int(v) for v in self.input_view_ids)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.num_input_views < 1:
            raise ValueError(f"ViewsConfig.num_input_views = {self.num_input_views}: must be >= 1")
        if self.num_target_rays < 0:
            raise ValueError(f"ViewsConfig.num_target_rays = {self.num_target_rays}: must be >= 0 (0: every pixel)")
        if self.targets not in ("others", "all"):
            raise ValueError(f"ViewsConfig.targets = {self.targets!r}: must be 'others' or 'all'")
        if self.downsample < 0:
            raise ValueError(f"ViewsConfig.downsample = {self.downsample}: must be >= 0")
        if self.input_view_ids is not None and len(self.input_view_ids) != self.num_input_views:
            raise ValueError(
                f"ViewsConfig.input_view_ids = {self.input_view_ids}: needs num_input_views = "
                f"{self.num_input_views} entries"
            )


# The reference loaders' settings (stelzner/srt, stelzner/osrt, stelzner/obsurf and their configs).
PRESETS: dict[str, ViewsConfig] = {
    "nmr": ViewsConfig(num_input_views=1, num_target_rays=8192, targets="others", canonical=True),
    "msn": ViewsConfig(
        num_input_views=5, num_target_rays=8192, targets="others", canonical=True,
        sample_with_replacement_if_short=False,
    ),
    "msn-isrt": ViewsConfig(
        num_input_views=5, num_target_rays=8192, targets="others", canonical=False,
        sample_with_replacement_if_short=False,
    ),
    "msn-hard": ViewsConfig(
        num_input_views=5, num_target_rays=2304, targets="others", canonical=False,
        sample_with_replacement_if_short=False,
    ),
    "clevr3d-srt": ViewsConfig(num_input_views=1, num_target_rays=8192, targets="all", downsample=1, canonical=True),
    "clevr3d-osrt": ViewsConfig(num_input_views=1, num_target_rays=8192, targets="all", downsample=1),
    "obsurf-msn-osrt": ViewsConfig(num_input_views=1, num_target_rays=6144, targets="all", downsample=1),
    "clevr3d-obsurf": ViewsConfig(num_input_views=1, num_target_rays=4096, targets="all"),
    "msn-obsurf": ViewsConfig(num_input_views=1, num_target_rays=2048, targets="all"),
}


def make_views_sample(scene: Scene, cfg: ViewsConfig, generator: torch.Generator) -> dict[str, Tensor]:
    """One "views" sample (no batch axis) of ``scene``; see the module docstring.

    Keys: ``input_images`` [K,3,h,w], ``input_camera_pos`` [K,3], ``input_rays`` [K,h,w,3],
    ``input_cam2world`` [K,4,4], ``input_intrinsics`` [K,3,3] (of the possibly strided h×w views),
    ``target_pixels`` / ``target_camera_pos`` / ``target_rays`` [P,3], ``transform`` [4,4], and,
    when the scene has them, ``input_masks`` / ``target_masks`` (int64 ids) and ``input_depths`` /
    ``target_depths`` (distance along the ray, unchanged by the rigid canonical transform).
    """
    cfg.validate()
    where = f"scene {scene.get('__key__', '?')}"
    for key in ("image", "cam2world", "intrinsics"):
        if key not in scene:
            raise ValueError(f"{where}: the views layout needs field '{key}' (3D scenes only)")
    num_views, height, width = scene["image"].shape[:3]
    k = cfg.num_input_views
    need = k + 1 if cfg.targets == "others" else k
    if num_views < need:
        raise ValueError(
            f"{where}: {num_views} views, but num_input_views={k} with targets='{cfg.targets}' needs {need}"
        )

    # Views: K inputs (random or fixed), targets = the rest or all of them.
    if cfg.input_view_ids is not None:
        input_ids = torch.as_tensor(cfg.input_view_ids, dtype=torch.long)
        if bool(((input_ids < 0) | (input_ids >= num_views)).any()) or len(set(cfg.input_view_ids)) != k:
            raise ValueError(f"{where}: input_view_ids {cfg.input_view_ids} must be {k} distinct views of {num_views}")
    else:
        input_ids = torch.randperm(num_views, generator=generator)[:k]
    if cfg.targets == "others":
        is_input = torch.zeros(num_views, dtype=torch.bool)
        is_input[input_ids] = True
        target_ids = torch.arange(num_views)[~is_input]
    else:
        target_ids = torch.arange(num_views)

    # Cameras and rays of every view, in the model frame.
    cam2world = torch.from_numpy(np.asarray(scene["cam2world"], dtype=np.float32))
    intrinsics = torch.from_numpy(np.asarray(scene["intrinsics"], dtype=np.float32))
    origins, dirs = pixel_rays(cam2world, intrinsics, height, width)  # [V,H,W,3]
    if cfg.canonical:
        first = input_ids[0]
        transform = canonical_transform(cam2world[first, :3, 3], centre_ray(dirs[first]))
        dirs = transform_points(dirs, transform, translate=False)
        origins = transform_points(origins, transform)
        cam2world = transform @ cam2world
    else:
        transform = torch.eye(4)

    images = torch.from_numpy(np.asarray(scene["image"])).float().div_(255.0)  # [V,H,W,3]
    masks = torch.from_numpy(np.asarray(scene["mask"]).astype(np.int64)) if "mask" in scene else None
    depths = torch.from_numpy(np.asarray(scene["depth"], dtype=np.float32)) if "depth" in scene else None

    # Input views (strided by 2**downsample from offset stride//2).
    stride = 2**cfg.downsample
    sub = (slice(None), slice(stride // 2, None, stride), slice(stride // 2, None, stride))
    input_k = intrinsics[input_ids]
    out: dict[str, Tensor] = {
        "input_images": images[input_ids][sub].permute(0, 3, 1, 2).contiguous(),
        "input_camera_pos": cam2world[input_ids, :3, 3].contiguous(),
        "input_rays": dirs[input_ids][sub].contiguous(),
        "input_cam2world": cam2world[input_ids].contiguous(),
        "input_intrinsics": stride_intrinsics(input_k, stride) if stride > 1 else input_k,
    }
    if masks is not None:
        out["input_masks"] = masks[input_ids][sub].contiguous()
    if depths is not None:
        out["input_depths"] = depths[input_ids][sub].contiguous()

    # Target rays: P pixels of the target views, without replacement unless there are too few;
    # P = 0 takes every pixel of every target view in (view, row, column) order (evaluation).
    pixels_per_view = height * width
    available = len(target_ids) * pixels_per_view
    p = cfg.num_target_rays
    if p == 0:
        flat = torch.arange(available)
    elif p <= available:
        flat = torch.randperm(available, generator=generator)[:p]
    elif cfg.sample_with_replacement_if_short:
        flat = torch.randint(available, (p,), generator=generator)
    else:
        raise ValueError(
            f"{where}: {p} target rays requested but only {available} target pixels and "
            "sample_with_replacement_if_short is False"
        )
    view = target_ids[flat // pixels_per_view]
    row = (flat % pixels_per_view) // width
    col = flat % width
    out["target_pixels"] = images[view, row, col].contiguous()
    out["target_camera_pos"] = origins[view, row, col].contiguous()
    out["target_rays"] = dirs[view, row, col].contiguous()
    if masks is not None:
        out["target_masks"] = masks[view, row, col].contiguous()
    if depths is not None:
        out["target_depths"] = depths[view, row, col].contiguous()
    out["transform"] = transform
    return out


def make_render_rays(
    cam2world: Tensor, intrinsics: Tensor, height: int, width: int, transform: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Origins and unit directions [H,W,3] of a (novel) world-frame camera, in the model frame.

    ``intrinsics`` are in pixels of the H×W image (``objdisc.geometry.resize_intrinsics`` converts
    a camera of another resolution); ``transform`` is the sample's world → model map (identity when
    None), so a camera path designed in world coordinates renders correctly under SRT's canonical
    frame.
    """
    cam2world = torch.as_tensor(cam2world, dtype=torch.float32)
    intrinsics = torch.as_tensor(intrinsics, dtype=torch.float32, device=cam2world.device)
    if transform is not None:
        cam2world = torch.as_tensor(transform, dtype=torch.float32, device=cam2world.device) @ cam2world
    return pixel_rays(cam2world, intrinsics, height, width)
