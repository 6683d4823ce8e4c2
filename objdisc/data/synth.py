"""objdisc synth: procedural multi-view CLEVR-like scenes, the embedded default dataset.

Every scene is a ground plane z = 0 with 2–6 objects (cubes, spheres, cylinders in CLEVR's eight
colours, matte "rubber" or shiny "metal") that rest on the ground without touching each other,
seen by several cameras on a ring around the origin. A small vectorised ray caster (numpy, one
ray per pixel centre, float64) renders per view an RGB image with Lambertian shading, an ambient
term, a specular highlight on metal and shadows cast by one directional light (shadow rays), an
instance mask and the Euclidean depth of the first hit.

The output is written in the CLEVR3D / ObSuRF on-disk layout so the
same source module reads the synthetic set and the real one:

    <out>/metadata.npz                  shape [N,6] (0 absent, 1 cube, 2 sphere, 3 cylinder),
                                        camera_pos [N,V,3] and per-scene extras (see ``generate``)
    <out>/images/img_{s}_{v}.png        RGB
    <out>/masks/masks_{s}_{v}.png       u8 entity index, 0 = background, object i → i + 1
    <out>/depths/depths_{s}_{v}.png     u16, depth = value / 1638.4
    <out>/synth.json                    the config and code tables used

Each scene is drawn from its own generator ``np.random.default_rng([seed, index])``, so any scene
can be regenerated alone and any number of worker processes writes identical bytes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from objdisc.geometry import clevr_intrinsics, look_at, pixel_rays
from objdisc.data.raytrace import cast, occluded, surface_normal
from objdisc.data.workers import spawn_pool
from objdisc.io import atomic_path

# Width of the per-object arrays in metadata.npz; mask ids are < MAX_OBJECTS + 1 (= E).
MAX_OBJECTS = 6
# ObSuRF's depth PNG scale: depth = value / 1638.4 (= 65536 · 0.025), so u16 covers [0, 40).
DEPTH_SCALE = 1638.4

# Codes as stored in metadata.npz (0 = no object in that slot).
SHAPES = ("cube", "sphere", "cylinder")  # codes 1, 2, 3
MATERIALS = ("rubber", "metal")  # codes 1, 2
# CLEVR's eight colours (properties.json), RGB 0–255; codes 1..8 in this order.
COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
_COLOR_NAMES = tuple(COLORS)
_ALBEDO = np.array([COLORS[c] for c in _COLOR_NAMES], dtype=np.float64) / 255.0

_SHADOW_OFFSET = 1e-4  # shadow rays start this far off the surface to avoid self-hits


@dataclass
class SynthConfig:
    """Knobs of the generator. Defaults: small CPU-friendly views that still show every object."""

    scenes: int = 2000
    views: int = 3
    height: int = 48
    width: int = 64
    min_objects: int = 2
    max_objects: int = 6
    seed: int = 0
    # Cameras on a ring around the origin, all looking at it (up = +z); the ring is turned by a
    # random per-scene azimuth and each camera may be jittered (degrees).
    camera_distance: float = 10.5
    camera_elevation: float = 32.0
    azimuth_jitter: float = 0.0
    elevation_jitter: float = 0.0
    # Objects: centres in x, y ∈ [-extent, extent]; size = radius (sphere, cylinder) or half side
    # (cube), every object is 2·size tall; bounding circles stay at least `margin` apart.
    extent: float = 3.0
    size_min: float = 0.5
    size_max: float = 0.9
    margin: float = 0.15
    # One directional light (from azimuth/elevation, degrees, jittered per scene) plus ambient.
    light_azimuth: float = -40.0
    light_elevation: float = 50.0
    light_jitter: float = 10.0
    ambient: float = 0.3
    diffuse: float = 0.7  # ambient + diffuse = 1: a face turned to the light shows its full albedo
    ground_albedo: float = 0.62
    sky_color: tuple[float, float, float] = (0.78, 0.82, 0.9)
    metal_diffuse: float = 0.7  # metal keeps this fraction of its diffuse colour ...
    metal_specular: float = 0.9  # ... and adds a white Blinn-Phong highlight
    metal_shininess: float = 40.0
    # Depth of rays that hit nothing (sky) and the cap of every depth: 65535 / 1638.4 ≈ 40.
    far: float = 40.0

    def __post_init__(self) -> None:
        self.sky_color = tuple(float(c) for c in self.sky_color)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""

        def bad(field: str, why: str) -> None:
            raise ValueError(f"SynthConfig.{field} = {getattr(self, field)!r}: {why}")

        for field in ("scenes", "views", "height", "width"):
            if int(getattr(self, field)) < 1:
                bad(field, "must be >= 1")
        if not 1 <= self.min_objects <= MAX_OBJECTS:
            bad("min_objects", f"must be in [1, {MAX_OBJECTS}]")
        if not self.min_objects <= self.max_objects <= MAX_OBJECTS:
            bad("max_objects", f"must be in [min_objects={self.min_objects}, {MAX_OBJECTS}]")
        if not 0.0 < self.camera_elevation < 90.0:
            bad("camera_elevation", "must be in (0, 90) degrees")
        for field in ("azimuth_jitter", "elevation_jitter", "light_jitter", "margin", "ambient", "diffuse"):
            if getattr(self, field) < 0:
                bad(field, "must be >= 0")
        if self.extent <= 0:
            bad("extent", "must be > 0")
        if self.size_min <= 0:
            bad("size_min", "must be > 0")
        if self.size_max < self.size_min:
            bad("size_max", f"must be >= size_min={self.size_min}")
        reach = (self.extent + math.sqrt(2) * self.size_max) * math.sqrt(2)
        if self.camera_distance <= reach + 2 * self.size_max:
            bad("camera_distance", f"must exceed {reach + 2 * self.size_max:.2f} so cameras stay outside the scene")
        if not self.camera_elevation + self.elevation_jitter < 90.0:
            bad("elevation_jitter", "camera_elevation + elevation_jitter must stay below 90 degrees")
        if not 0.0 < self.light_elevation <= 90.0:
            bad("light_elevation", "must be in (0, 90] degrees")
        # Placement must stay easy: the largest objects' bounding discs (each grown by half the margin)
        # may cover at most half the floor they can reach, well below random packing's jamming limit.
        bound = math.sqrt(2) * self.size_max + self.margin / 2
        if self.max_objects * math.pi * bound**2 > 0.5 * (2 * self.extent + 2 * bound) ** 2:
            bad("max_objects", f"{self.max_objects} objects of size {self.size_max} do not fit in extent {self.extent}")
        for field in ("ground_albedo", "metal_diffuse", "metal_specular"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                bad(field, "must be in [0, 1]")
        if len(self.sky_color) != 3 or not all(0.0 <= c <= 1.0 for c in self.sky_color):
            bad("sky_color", "must be three values in [0, 1]")
        if self.metal_shininess <= 0:
            bad("metal_shininess", "must be > 0")
        if not 0.0 < self.far <= 65536 / DEPTH_SCALE:  # 40 itself is stored as 65535, 1/1638.4 short
            bad("far", f"must be in (0, {65536 / DEPTH_SCALE:g}] (the u16 depth PNG range)")


# --------------------------------------------------------------------------------------------
# Scene sampling


def _f32(x: float) -> float:
    """Round to float32 so the metadata (stored as float32) describes exactly what was rendered."""
    return float(np.float32(x))


def sample_objects(cfg: SynthConfig, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Objects resting on z = 0 whose bounding circles are at least ``cfg.margin`` apart.

    Rejection sampling per object; if an object finds no free spot the whole layout is redrawn,
    so the object count (drawn first) is always honoured.
    """
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for _ in range(100):
        objects: list[dict[str, Any]] = []
        discs: list[tuple[float, float, float]] = []
        for _ in range(count):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            color = _COLOR_NAMES[int(rng.integers(len(_COLOR_NAMES)))]
            material = MATERIALS[int(rng.integers(len(MATERIALS)))]
            size = _f32(rng.uniform(cfg.size_min, cfg.size_max))
            rotation = _f32(rng.uniform(0.0, 360.0))
            # A cube's footprint reaches its corners; spheres and cylinders their radius.
            bound = size * (math.sqrt(2) if shape == "cube" else 1.0)
            for _ in range(100):
                x, y = (_f32(v) for v in rng.uniform(-cfg.extent, cfg.extent, size=2))
                if all(math.hypot(x - ox, y - oy) >= bound + ob + cfg.margin for ox, oy, ob in discs):
                    break
            else:
                break  # no room left for this object: redraw the layout
            discs.append((x, y, bound))
            objects.append(
                dict(shape=shape, color=color, material=material, size=size, position=[x, y, size], rotation=rotation)
            )
        if len(objects) == count:
            return objects
    raise RuntimeError(f"could not place {count} objects without overlap; lower SynthConfig.size_max or max_objects")


def sample_cameras(cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Camera positions [V,3] on a ring: evenly spaced azimuths plus a per-scene offset (+ jitter)."""
    offset = rng.uniform(0.0, 2 * np.pi)
    azimuth = offset + 2 * np.pi * np.arange(cfg.views) / cfg.views
    azimuth = azimuth + np.deg2rad(cfg.azimuth_jitter) * rng.uniform(-1.0, 1.0, cfg.views)
    elevation = np.deg2rad(cfg.camera_elevation + cfg.elevation_jitter * rng.uniform(-1.0, 1.0, cfg.views))
    r = cfg.camera_distance
    pos = np.stack(
        [r * np.cos(elevation) * np.cos(azimuth), r * np.cos(elevation) * np.sin(azimuth), r * np.sin(elevation)], -1
    )
    return pos.astype(np.float32)


def sample_light(cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Unit direction [3] towards the directional light."""
    az, el = np.deg2rad([cfg.light_azimuth, cfg.light_elevation] + cfg.light_jitter * rng.uniform(-1.0, 1.0, 2))
    el = min(el, np.pi / 2)
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


# --------------------------------------------------------------------------------------------
# Shading


def shade(
    cfg: SynthConfig, objects: list[dict[str, Any]], light: np.ndarray, o: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour [R,3] in [0,1], instance id [R] and depth [R] of rays [R,3]."""
    t, ids = cast(objects, o, d)
    sky = ~np.isfinite(t) | (t >= cfg.far)  # ground beyond `far` reads as sky as well
    ids[sky] = 0
    depth = np.where(sky, cfg.far, t)
    x = o + depth[:, None] * d

    normal = np.zeros_like(x)
    normal[:, 2] = 1.0
    albedo = np.full_like(x, cfg.ground_albedo)
    diffuse_scale = np.ones(len(x))
    specular = np.zeros(len(x))
    for i, obj in enumerate(objects):
        sel = ids == i + 1
        if not sel.any():
            continue
        normal[sel] = surface_normal(obj, x[sel])
        albedo[sel] = _ALBEDO[_COLOR_NAMES.index(obj["color"])]
        if obj["material"] == "metal":
            diffuse_scale[sel] = cfg.metal_diffuse
            specular[sel] = cfg.metal_specular

    lambert = np.clip(normal @ light, 0.0, None)
    lit = (lambert > 0) & ~sky
    visible = np.zeros(len(x))
    visible[lit] = ~occluded(objects, x[lit] + _SHADOW_OFFSET * normal[lit], light)
    half = light - d
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    highlight = specular * np.clip(np.einsum("ri,ri->r", normal, half), 0.0, None) ** cfg.metal_shininess
    rgb = albedo * (cfg.ambient + cfg.diffuse * diffuse_scale * lambert * visible)[:, None]
    rgb = rgb + (highlight * visible)[:, None]
    rgb[sky] = cfg.sky_color
    return np.clip(rgb, 0.0, 1.0), ids, depth.astype(np.float32)


def _camera_rays(
    cam2world: np.ndarray, intrinsics: np.ndarray, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixel_rays`` in float64 on one thread: for these tiny tensors torch's intra-op threads only
    contend with other processes (20x slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pixel_rays(torch.from_numpy(cam2world).double(), torch.from_numpy(intrinsics).double(), height, width)
    finally:
        torch.set_num_threads(threads)


def render_scene(cfg: SynthConfig, index: int) -> dict[str, Any]:
    """Sample and render scene ``index`` of ``cfg``; the same (cfg, index) always gives the same scene.

    Returns image u8 [V,H,W,3], mask u8 [V,H,W], depth f32 [V,H,W] (Euclidean, capped at ``far``),
    cam2world f32 [V,4,4] (OpenCV axes), intrinsics f32 [V,3,3], camera_pos f32 [V,3],
    light f64 [3] (unit direction towards the light) and objects (list of dicts).
    """
    rng = np.random.default_rng([cfg.seed, index])
    objects = sample_objects(cfg, rng)
    camera_pos = sample_cameras(cfg, rng)
    light = sample_light(cfg, rng)

    V, H, W = cfg.views, cfg.height, cfg.width
    cam2world = look_at(camera_pos)
    intrinsics = np.broadcast_to(clevr_intrinsics(H, W), (V, 3, 3)).copy()
    o, d = _camera_rays(cam2world, intrinsics, H, W)
    o, d = o.reshape(-1, 3).numpy(), d.reshape(-1, 3).numpy()
    rgb, ids, depth = shade(cfg, objects, light, o, d)
    return {
        "image": np.round(rgb * 255.0).astype(np.uint8).reshape(V, H, W, 3),
        "mask": ids.reshape(V, H, W),
        "depth": depth.reshape(V, H, W),
        "cam2world": cam2world,
        "intrinsics": intrinsics,
        "camera_pos": camera_pos,
        "light": light,
        "objects": objects,
    }


# --------------------------------------------------------------------------------------------
# Writing the CLEVR3D / ObSuRF layout


def depth_to_png(depth: np.ndarray) -> np.ndarray:
    """u16 depth PNG values: round(depth · 1638.4), clipped to the u16 range."""
    return np.clip(np.round(depth.astype(np.float64) * DEPTH_SCALE), 0, 65535).astype(np.uint16)


def _write_chunk(cfg: SynthConfig, root: str, indices: list[int]) -> list[tuple[int, list[dict], np.ndarray]]:
    """Render and write the PNGs of some scenes; return their objects and camera positions."""
    root_path = Path(root)
    rows = []
    for s in indices:
        scene = render_scene(cfg, s)
        for v in range(cfg.views):
            Image.fromarray(scene["image"][v]).save(root_path / "images" / f"img_{s}_{v}.png")
            Image.fromarray(scene["mask"][v]).save(root_path / "masks" / f"masks_{s}_{v}.png")
            Image.fromarray(depth_to_png(scene["depth"][v])).save(root_path / "depths" / f"depths_{s}_{v}.png")
        rows.append((s, scene["objects"], scene["camera_pos"]))
    return rows


def _metadata(cfg: SynthConfig, rows: dict[int, tuple[list[dict], np.ndarray]]) -> dict[str, np.ndarray]:
    N, M = cfg.scenes, MAX_OBJECTS
    meta = {
        "shape": np.zeros((N, M), np.int64),
        "camera_pos": np.zeros((N, cfg.views, 3), np.float32),
        "color": np.zeros((N, M), np.int64),
        "material": np.zeros((N, M), np.int64),
        "size": np.zeros((N, M), np.float32),
        "position": np.zeros((N, M, 3), np.float32),
        "rotation": np.zeros((N, M), np.float32),
        "seed": np.full(N, cfg.seed, np.int64),
    }
    for s, (objects, camera_pos) in rows.items():
        meta["camera_pos"][s] = camera_pos
        for i, obj in enumerate(objects):
            meta["shape"][s, i] = SHAPES.index(obj["shape"]) + 1
            meta["color"][s, i] = _COLOR_NAMES.index(obj["color"]) + 1
            meta["material"][s, i] = MATERIALS.index(obj["material"]) + 1
            meta["size"][s, i] = obj["size"]
            meta["position"][s, i] = obj["position"]
            meta["rotation"][s, i] = obj["rotation"]
    return meta


def generate(cfg: SynthConfig, out: str | Path, workers: int = 1, progress: bool = True) -> Path:
    """Render ``cfg.scenes`` scenes into ``out`` in the CLEVR3D / ObSuRF layout and return ``out``.

    metadata.npz holds ``shape``, ``camera_pos`` and, per scene, ``color`` (1..8 as in ``COLORS``),
    ``material`` (1 rubber, 2 metal), ``size``, ``position`` [.,6,3], ``rotation`` (degrees) and
    ``seed``. The folder is built under a temporary name and renamed into place at the end, so an
    interrupted run never leaves a complete-looking ``out``.
    """
    cfg.validate()
    if workers < 1:
        raise ValueError(f"workers = {workers}: must be >= 1")
    out = Path(out)
    # Only an earlier generation (it holds synth.json) or an empty folder may be replaced: ``out``
    # could be any folder a user named, and what this function did not write is not its to delete.
    if out.exists() and not (out.is_dir() and ((out / "synth.json").is_file() or not any(out.iterdir()))):
        raise FileExistsError(
            f"synth: {out} exists and is not an earlier `objdisc synth` output (no synth.json); "
            "choose another folder or move it away"
        )
    old = None
    with atomic_path(out) as tmp:
        for sub in ("images", "masks", "depths"):
            (tmp / sub).mkdir(parents=True)
        size = max(1, min(64, cfg.scenes // (8 * workers)))
        chunks = [list(range(i, min(i + size, cfg.scenes))) for i in range(0, cfg.scenes, size)]
        rows: dict[int, tuple[list[dict], np.ndarray]] = {}
        with tqdm(total=cfg.scenes, desc="synth", unit="scene", disable=not progress) as bar:

            def collect(done: list[tuple[int, list[dict], np.ndarray]]) -> None:
                for s, objects, camera_pos in done:
                    rows[s] = (objects, camera_pos)
                bar.update(len(done))

            if workers == 1:
                for chunk in chunks:
                    collect(_write_chunk(cfg, str(tmp), chunk))
            else:
                with spawn_pool(workers, "synth") as pool:
                    futures = [pool.submit(_write_chunk, cfg, str(tmp), chunk) for chunk in chunks]
                    for future in as_completed(futures):
                        collect(future.result())
        np.savez(tmp / "metadata.npz", **_metadata(cfg, rows))
        info = {
            "config": dataclasses.asdict(cfg),
            "max_objects": MAX_OBJECTS,
            "depth_scale": DEPTH_SCALE,
            "shapes": list(SHAPES),
            "colors": {name: list(rgb) for name, rgb in COLORS.items()},
            "materials": list(MATERIALS),
        }
        (tmp / "synth.json").write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():  # an earlier generation (this stage's own output) steps aside, then goes
            old = out.with_name(f"{out.name}.old-{os.getpid()}")
            out.rename(old)
    if old is not None:
        shutil.rmtree(old)
    return out

