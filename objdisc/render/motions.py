"""Camera paths for novel-view videos, as the SRT/OSRT and ObSuRF render scripts move their camera.

A motion maps the base camera and a normalised time t ∈ [0,1] to the camera of that frame:
``motion(cam2world [4,4], intrinsics [3,3], t) -> (cam2world, intrinsics)`` in this project's
convention (OpenCV cam2world, world up +z, see ``objdisc.geometry``). The references describe
cameras by a position and a level look-at orientation (their ``get_extrinsic``); here that is
``geometry.look_at``. Their base camera always looks at the origin; motions that only move the
camera or change its lens (``rotate``, ``zoom``, ``zoom2d``, ``static``) keep whatever orientation
the given camera has, motions that aim it (the closeups, ``eyeroll``) use the given camera's
position only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from objdisc.geometry import look_at

Motion = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]

# The references' fade: accelerate over the first 20 % of the video, glide, decelerate over the last.
T_FADE = 0.2


def ease_fade(t: float | np.ndarray, t_fade: float = T_FADE) -> float | np.ndarray:
    """Time remapped so the camera starts and stops at rest: constant acceleration a for
    t ≤ t_fade, constant speed v = 1/(1 − t_fade) in the middle, the mirror image at the end.
    a = v/t_fade makes the pieces meet (0.125 and 0.875 for t_fade = 0.2) and keeps f(1) = 1."""
    t = np.asarray(t, dtype=np.float64)
    v = 1.0 / (1.0 - t_fade)
    a = v / t_fade
    out = np.where(
        t <= t_fade,
        0.5 * a * t**2,
        np.where(t <= 1.0 - t_fade, 0.5 * a * t_fade**2 + v * (t - t_fade), 1.0 - 0.5 * a * (t - 1.0) ** 2),
    )
    return float(out) if out.ndim == 0 else out


def easeout(t: float) -> float:
    """The closeups' height curve: −½t² + 1.5t, so the camera drops fast and arrives gently."""
    return -0.5 * t**2 + 1.5 * t


def lerp(x, y, t):
    return x + (y - x) * t


def rotate_z(theta: float) -> np.ndarray:
    """[3,3] rotation by theta about the world z axis (counter-clockwise seen from above)."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def aim(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """float64 cam2world of a level camera at ``eye`` looking at ``target``, with a clear error
    where no level camera exists (looking straight up or down)."""
    c2w = look_at(np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)).astype(np.float64)
    if not np.isfinite(c2w).all():
        raise ValueError(f"no level camera at {eye} looks at {target} (view axis parallel to +z)")
    c2w[:3, 3] = eye  # keep full precision (look_at returns float32)
    return c2w


# ---- SRT / OSRT ---------------------------------------------------------------------------------


def rotate(cam2world: np.ndarray, intrinsics: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Orbit: position and orientation turned about the world z axis by θ = 2πt."""
    out = np.array(cam2world, dtype=np.float64)
    out[:3, :] = rotate_z(2.0 * math.pi * t) @ out[:3, :]
    return out, np.array(intrinsics, dtype=np.float64)


def zoom(cam2world: np.ndarray, intrinsics: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Fixed camera, sensor width shrinking linearly 0.032 → 0.0064 (÷ 5). Focal lengths in pixels
    scale with 1/sensor, i.e. by 1/(1 − 0.8t), ×5 as t → 1; the principal point stays."""
    k = np.array(intrinsics, dtype=np.float64)
    sensor_fraction = lerp(1.0, 1.0 / 5.0, t)
    k[0, 0] /= sensor_fraction
    k[1, 1] /= sensor_fraction
    return np.array(cam2world, dtype=np.float64), k


def closeup_pose(
    pos: np.ndarray, t: float, closeup: float = 0.2, z_closeup: float = 0.1, lookup: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Camera position and track point of SRT's closeup at time t (zoomout 1).

    The camera moves in to ``closeup``·pos, dropping to ``z_closeup``·pos_z along ``easeout``, while
    its gaze moves from the origin to the floor point ``lookup`` times as far as the origin along
    the original view axis (pos + (0 − pos)·lookup, z = 0), so the camera ends up looking past the
    scene centre, towards the far side of the floor."""
    pos = np.asarray(pos, dtype=np.float64)
    final_pos = closeup * pos
    final_pos[2] = z_closeup * pos[2]
    final_track = pos + (np.zeros(3) - pos) * lookup
    final_track[2] = 0.0
    cur_pos = lerp(pos, final_pos, t)
    cur_pos[2] = lerp(pos[2], final_pos[2], easeout(t))
    cur_track = lerp(np.zeros(3), final_track, t)
    return cur_pos, cur_track


def closeup(
    cam2world: np.ndarray, intrinsics: np.ndarray, t: float, lookup: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Fly in towards the scene centre, lowering the camera and panning up (``closeup_pose``)."""
    eye, target = closeup_pose(np.asarray(cam2world, dtype=np.float64)[:3, 3], t, lookup=lookup)
    return aim(eye, target), np.array(intrinsics, dtype=np.float64)


def rotate_and_closeup(cam2world: np.ndarray, intrinsics: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Orbit once while moving halfway into the closeup and back: t_c = ½(1 − cos 2πt)·½ (0 → ½ → 0),
    closeup(t_c) with lookup 1.5, then rotate by 2πt."""
    t_c = 0.5 * (1.0 - math.cos(2.0 * math.pi * t)) * 0.5
    c2w, k = closeup(cam2world, intrinsics, t_c, lookup=1.5)
    return rotate(c2w, k, t)


EYEROLL_RADIUS = 1.5


def eyeroll(cam2world: np.ndarray, intrinsics: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Fixed camera whose gaze circles the scene: track point 1.5·(cos θ, sin θ, 0), θ = −2πt."""
    theta = -2.0 * math.pi * t
    target = EYEROLL_RADIUS * np.array([math.cos(theta), math.sin(theta), 0.0])
    eye = np.asarray(cam2world, dtype=np.float64)[:3, 3]
    return aim(eye, target), np.array(intrinsics, dtype=np.float64)


def static(cam2world: np.ndarray, intrinsics: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The input camera in every frame (ObSuRF's ``graspnet``)."""
    return np.array(cam2world, dtype=np.float64), np.array(intrinsics, dtype=np.float64)


# ---- ObSuRF -------------------------------------------------------------------------------------


def obsurf_closeup_pose(
    pos: np.ndarray, t: float, closeup: float = 0.3, z_closeup: float = 0.25, lookup: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """Camera position and track point of ObSuRF's closeup at time t.

    The camera moves to ``closeup``·pos with height ``z_closeup``·pos_z (height along ``easeout``).
    The gaze starts where the original view axis (towards the origin), shifted to pass through the
    current position, meets the floor z = 0, and moves to −``lookup``·pos/‖pos‖ with z = 0."""
    pos = np.asarray(pos, dtype=np.float64)
    final_pos = closeup * pos
    final_pos[2] = z_closeup * pos[2]
    final_track = -lookup * pos / np.linalg.norm(pos)
    final_track[2] = 0.0
    view_dir = -pos / np.linalg.norm(pos)
    if view_dir[2] == 0.0:
        raise ValueError(f"ObSuRF closeup needs a camera above or below the floor, got {pos}")
    cur_pos = lerp(pos, final_pos, t)
    cur_pos[2] = lerp(pos[2], final_pos[2], easeout(t))
    floor_hit = cur_pos + view_dir * (cur_pos[2] / -view_dir[2])
    cur_track = lerp(floor_hit, final_track, t)
    return cur_pos, cur_track


def obsurf_closeup(
    cam2world: np.ndarray, intrinsics: np.ndarray, t: float, lookup: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """ObSuRF's gentler fly-in (``obsurf_closeup_pose``)."""
    eye, target = obsurf_closeup_pose(np.asarray(cam2world, dtype=np.float64)[:3, 3], t, lookup=lookup)
    return aim(eye, target), np.array(intrinsics, dtype=np.float64)


def obsurf_rotate_and_closeup(
    cam2world: np.ndarray, intrinsics: np.ndarray, t: float
) -> tuple[np.ndarray, np.ndarray]:
    """``rotate_and_closeup`` built on ObSuRF's closeup (lookup 1.5)."""
    t_c = 0.5 * (1.0 - math.cos(2.0 * math.pi * t)) * 0.5
    c2w, k = obsurf_closeup(cam2world, intrinsics, t_c, lookup=1.5)
    return rotate(c2w, k, t)


# ObSuRF's 2D zoom: the sampling grid's half-size (image = [−0.5, 0.5]²) shrinks 0.5 → 0.1 (÷ 5)
# around a centre offset by 1/128 (half a pixel of the 64×64 grid its 2D models are trained on).
ZOOM2D_HALF_SIZE = (0.5, 0.1)
ZOOM2D_OFFSET = 1.0 / 128.0


def zoom2d(cam2world: np.ndarray, intrinsics: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """ObSuRF's ``zoom2d`` for a camera: a fixed camera whose picture zooms into the image.

    ObSuRF's render script zooms its 2D models by shrinking the grid of query points over the image
    square [−0.5, 0.5]²: half-size 0.5 → 0.1, offset 1/128, rendered at 256 × 256 (the script
    gives no more than these three numbers). Read here as: at time t the frame shows the window of
    the original image with half-size h = lerp(0.5, 0.1, t) (fractions of the image side), centred
    at (0.5 + 1/128, 0.5 + 1/128) of the image (x right, y down) instead of its middle, i.e. the
    grid [−h, h]² shifted by 1/128, half a pixel of the 64 × 64 grid ObSuRF's 2D models are trained
    on. In camera terms: focal lengths × 0.5/h (× 5 at the end, exactly the sensor ratio of
    ``zoom``, so zoom2d is ``zoom`` aimed 1/128 of the image off-centre) and the principal point
    moved so that the window's centre lands on the image centre. The image size is taken as twice
    the principal point (cameras centred on the image, as every dataset here has). The window
    shrinks with the raw frame index, like the references' zoom (fade not applied), and it is
    the camera's resolution, not a fixed 256 × 256, that the frame is rendered at
    (``render.height/width``). ObSuRF's 2D models (images without cameras) are rendered by the
    image family and have no camera to move; this is the zoom for the scene models.
    """
    k = np.array(intrinsics, dtype=np.float64)
    start, end = ZOOM2D_HALF_SIZE
    scale = start / lerp(start, end, t)  # magnification 0.5 / h
    for axis in (0, 1):  # x (columns) and y (rows)
        centre = k[axis, 2]  # image centre, = size / 2
        window_centre = centre + ZOOM2D_OFFSET * 2.0 * centre  # pixel of the window's centre
        k[axis, axis] *= scale
        k[axis, 2] = centre + scale * (centre - window_centre)
    k[0, 1] *= scale  # skew scales with the focal lengths
    return np.array(cam2world, dtype=np.float64), k


MOTIONS: dict[str, Motion] = {
    "rotate": rotate,
    "zoom": zoom,
    "closeup": closeup,
    "rotate_and_closeup": rotate_and_closeup,
    "eyeroll": eyeroll,
    "static": static,
    "graspnet": static,  # ObSuRF's name for the static camera
    "zoom3d": zoom,  # ObSuRF's name for zoom
    "obsurf_closeup": obsurf_closeup,
    "obsurf_rotate_and_closeup": obsurf_rotate_and_closeup,
    "zoom2d": zoom2d,
}

# The references shrink the sensor with the raw frame index, ignoring --fade (zoom2d likewise).
UNFADED = frozenset({"zoom", "zoom3d", "zoom2d"})


def camera_path(
    cam2world: np.ndarray, intrinsics: np.ndarray, motion: str, num_frames: int, fade: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Cameras of every frame: t = frame/num_frames (the last frame stops one step short of t = 1,
    so a full orbit loops seamlessly), remapped by ``ease_fade`` when ``fade`` (except zoom).

    Returns cam2worlds [F,4,4] and intrinsics [F,3,3] in the dtype of ``cam2world`` (float32 for
    non-float input)."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; known motions: {', '.join(sorted(MOTIONS))}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    cam2world = np.asarray(cam2world)
    intrinsics = np.asarray(intrinsics)
    if cam2world.shape != (4, 4) or intrinsics.shape != (3, 3):
        raise ValueError(f"expected cam2world [4,4] and intrinsics [3,3], got {cam2world.shape}, {intrinsics.shape}")
    dtype = cam2world.dtype if np.issubdtype(cam2world.dtype, np.floating) else np.float32
    fn = MOTIONS[motion]
    poses, ks = [], []
    for frame in range(num_frames):
        t = frame / num_frames
        if fade and motion not in UNFADED:
            t = ease_fade(t)
        c2w, k = fn(cam2world, intrinsics, t)
        poses.append(c2w)
        ks.append(k)
    return np.stack(poses).astype(dtype), np.stack(ks).astype(dtype)
