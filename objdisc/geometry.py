"""Cameras and rays. One convention everywhere: OpenCV camera axes (x right, y down, z forward),
``cam2world`` 4×4 and pinhole ``intrinsics`` K in pixels, rays through pixel centres.

Sources convert their own camera conventions into this one; models derive rays with
``pixel_rays`` and never see a source's quirks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# CLEVR's Blender camera: 35 mm focal length on a 32 × 24 mm sensor.
CLEVR_FOCAL = 0.035
CLEVR_SENSOR = (0.032, 0.024)


def look_at(eye: np.ndarray, target: np.ndarray = (0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """cam2world [...,4,4] (float32) of cameras at ``eye`` looking at ``target``, level w.r.t. ``up``.

    Axes as CLEVR's renderer builds them: forward d = normalise(target − eye), right = normalise(d × up),
    down = normalise(d × right).
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), eye.shape)
    up = np.broadcast_to(np.asarray(up, dtype=np.float64), eye.shape)
    forward = _normalise(target - eye)
    right = _normalise(np.cross(forward, up))
    down = _normalise(np.cross(forward, right))
    c2w = np.zeros(eye.shape[:-1] + (4, 4))
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = down
    c2w[..., :3, 2] = forward
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w.astype(np.float32)


def clevr_intrinsics(height: int, width: int, focal: float = CLEVR_FOCAL, sensor=CLEVR_SENSOR) -> np.ndarray:
    """K [3,3] of CLEVR's pinhole: the sensor spans the image, principal point at the centre.

    Matches the reference ray formula h_j = (−1 + (2j+1)/W)·sensor_w/2 at pixel centre j + 0.5.
    """
    fx = (width / 2) * focal / (sensor[0] / 2)
    fy = (height / 2) * focal / (sensor[1] / 2)
    return np.array([[fx, 0, width / 2], [0, fy, height / 2], [0, 0, 1]], dtype=np.float32)


def pixel_rays(cam2world: Tensor, intrinsics: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Origins and unit directions [...,H,W,3] of the rays through every pixel centre.

    ``cam2world`` [...,4,4] and ``intrinsics`` [...,3,3] share their leading axes.
    """
    dtype, device = cam2world.dtype, cam2world.device
    rows = torch.arange(height, dtype=dtype, device=device) + 0.5
    cols = torch.arange(width, dtype=dtype, device=device) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")  # [H,W]
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [H,W,3]
    k_inv = torch.linalg.inv(intrinsics)  # [...,3,3]
    cam_dirs = torch.einsum("...ij,hwj->...hwi", k_inv, pix)
    dirs = torch.einsum("...ij,...hwj->...hwi", cam2world[..., :3, :3], cam_dirs)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = cam2world[..., None, None, :3, 3].expand_as(dirs)
    return origins, dirs


def positional_encoding(x: Tensor, num_octaves: int, start_octave: int = 0) -> Tensor:
    """SRT's encoding: sin(x·2^o·π) for o in [s, s+n) per coordinate, then the cosines.

    [..., D] → [..., 2·D·n]; layout all sines (coordinate-major), then all cosines; no raw x.
    """
    octaves = torch.arange(start_octave, start_octave + num_octaves, dtype=x.dtype, device=x.device)
    scaled = x[..., :, None] * (2.0**octaves) * torch.pi  # [..., D, n]
    scaled = scaled.flatten(-2)
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=-1)


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Frames, intrinsics under resampling, ray limits (used by the 3D models and their data).


def transform_points(points: Tensor, transform: Tensor, translate: bool = True) -> Tensor:
    """Apply the 4×4 (or 3×4) ``transform`` to ``points`` [...,3]; ``translate=False`` for directions.

    The transform's leading axes broadcast against the points' leading axes, aligned from the right
    (insert singleton axes for per-point broadcasting, e.g. ``transform[:, None]``).
    """
    rotated = torch.einsum("...ij,...j->...i", transform[..., :3, :3], points)
    return rotated + transform[..., :3, 3] if translate else rotated


def centre_ray(rays: Tensor) -> Tensor:
    """Unit mean direction of the pixel(s) at the true centre of ``rays`` [...,H,W,3].

    The centre is one pixel for an odd side and the middle two for an even side (so 1, 2 or 4
    pixels). SRT's ``get_extrinsic`` meant the same but, for even sizes, averaged the middle two
    columns over *all* rows (a known stelzner/srt bug: the row restriction is overwritten); this is
    the intended version.
    """
    h, w = rays.shape[-3], rays.shape[-2]
    rows = slice((h - 1) // 2, h // 2 + 1)
    cols = slice((w - 1) // 2, w // 2 + 1)
    mean = rays[..., rows, cols, :].mean(dim=(-3, -2))
    return mean / mean.norm(dim=-1, keepdim=True)


def canonical_transform(camera_pos: Tensor, forward: Tensor, up=(0.0, 0.0, 1.0)) -> Tensor:
    """SRT's canonical frame: world → the frame of a level camera at ``camera_pos`` facing ``forward``.

    Axes: z = normalise(forward), x = normalise(z × up), y = z × x; the 4×4 has rows (x, y, z) and
    translation −R·pos. For a level camera built by ``look_at`` this is exactly ``inverse(cam2world)``.
    ``camera_pos`` and ``forward`` are [...,3]; returns [...,4,4]. Raises if forward is parallel to up.
    """
    up_t = torch.as_tensor(up, dtype=forward.dtype, device=forward.device).expand_as(forward)
    z = forward / forward.norm(dim=-1, keepdim=True)
    x = torch.linalg.cross(z, up_t, dim=-1)
    x_norm = x.norm(dim=-1, keepdim=True)
    if bool((x_norm < 1e-8).any()):
        raise ValueError("canonical_transform: the view direction is parallel to the up axis; no level frame")
    x = x / x_norm
    y = torch.linalg.cross(z, x, dim=-1)
    rot = torch.stack([x, y, z], dim=-2)  # rows
    out = torch.zeros(forward.shape[:-1] + (4, 4), dtype=forward.dtype, device=forward.device)
    out[..., :3, :3] = rot
    out[..., :3, 3] = -torch.einsum("...ij,...j->...i", rot, camera_pos)
    out[..., 3, 3] = 1.0
    return out


def stride_intrinsics(intrinsics: Tensor, stride: int) -> Tensor:
    """K of the image subsampled as ``x[s//2::s, s//2::s]`` (srt's ``downsample``), s = ``stride``.

    New pixel i is old pixel s·i + s//2, whose centre s·i + s//2 + ½ must equal s·(i + ½) + c, so
    u_old = s·u_new + c with c = s//2 + ½ − s/2; hence f' = f/s and p' = (p − c)/s.
    """
    shift = stride // 2 + 0.5 - stride / 2
    out = intrinsics.clone()
    out[..., 0, 0] = intrinsics[..., 0, 0] / stride
    out[..., 1, 1] = intrinsics[..., 1, 1] / stride
    out[..., 0, 2] = (intrinsics[..., 0, 2] - shift) / stride
    out[..., 1, 2] = (intrinsics[..., 1, 2] - shift) / stride
    return out


def resize_intrinsics(intrinsics: Tensor, size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """K of the same camera rendered at ``new_size`` (H', W') instead of ``size`` (H, W): the image
    edges stay where they are, so pixel coordinates scale by W'/W and H'/H."""
    sy, sx = new_size[0] / size[0], new_size[1] / size[1]
    out = intrinsics.clone()
    out[..., 0, :] = intrinsics[..., 0, :] * sx
    out[..., 1, :] = intrinsics[..., 1, :] * sy
    return out


def ray_plane_distance(origins: Tensor, dirs: Tensor, z: float) -> Tensor:
    """Distance [...] along each ray to the horizontal plane at height ``z`` (inf where the ray
    runs parallel to it or meets it behind the origin)."""
    t = (z - origins[..., 2]) / dirs[..., 2]
    return torch.where(torch.isfinite(t) & (t >= 0), t, torch.full_like(t, float("inf")))


def clip_far(origins: Tensor, dirs: Tensor, far: float, min_z: float | None) -> Tensor:
    """Per-ray far bound [...]: ``far``, shortened to where the ray meets the plane z = ``min_z``
    (V-SRT and ObSuRF stop their samples at the ground); ``min_z=None`` keeps ``far``."""
    far_t = torch.full_like(origins[..., 0], float(far))
    if min_z is None:
        return far_t
    return torch.minimum(far_t, ray_plane_distance(origins, dirs, min_z))
