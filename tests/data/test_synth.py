"""Tests of the embedded synthetic generator: geometry checked against independent signed distance
functions, shading against the lighting model, the files against the CLEVR3D / ObSuRF layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from objdisc.data import synth
from objdisc.data.synth import COLORS, DEPTH_SCALE, MAX_OBJECTS, SHAPES, SynthConfig, generate, render_scene
from objdisc.geometry import pixel_rays

TINY = dict(views=2, height=24, width=32)


def tiny(**kw) -> SynthConfig:
    return SynthConfig(**{**TINY, "scenes": 3, **kw})


# ---------------------------------------------------------------- independent geometry (SDFs)


def sdf(obj: dict, x: np.ndarray) -> np.ndarray:
    """Signed distance [R] from points [R,3] to ``obj`` (negative inside)."""
    a = math.radians(obj["rotation"])
    p = x - np.asarray(obj["position"])
    # into the object frame: rotate by -rotation about z
    c, s = math.cos(a), math.sin(a)
    p = np.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1], p[:, 2]], -1)
    r = obj["size"]
    if obj["shape"] == "sphere":
        return np.linalg.norm(p, axis=-1) - r
    if obj["shape"] == "cube":
        q = np.abs(p) - r
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)
    q = np.stack([np.hypot(p[:, 0], p[:, 1]) - r, np.abs(p[:, 2]) - r], -1)
    return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)


def scene_sdf(objects: list[dict], x: np.ndarray) -> np.ndarray:
    return np.min([sdf(o, x) for o in objects], axis=0)


def blocked(objects: list[dict], x: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Whether the ray from each point towards the light meets an object (sphere tracing the SDFs)."""
    t = np.full(len(x), 1e-3)
    hit = np.zeros(len(x), dtype=bool)
    for _ in range(120):
        dist = scene_sdf(objects, x + t[:, None] * light)
        hit |= (dist < 1e-5) & (t < 30.0)
        t = t + np.maximum(dist, 1e-3)
    return hit


def rays(scene: dict) -> tuple[np.ndarray, np.ndarray]:
    V, H, W = scene["mask"].shape
    c2w, K = torch.from_numpy(scene["cam2world"]).double(), torch.from_numpy(scene["intrinsics"]).double()
    o, d = pixel_rays(c2w, K, H, W)
    return o.reshape(-1, 3).numpy(), d.reshape(-1, 3).numpy()


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value",
    [
        ("scenes", 0),
        ("views", 0),
        ("height", 0),
        ("min_objects", 0),
        ("max_objects", 7),
        ("camera_elevation", 95.0),
        ("camera_distance", 3.0),
        ("size_min", -0.1),
        ("far", 50.0),
    ],
)
def test_config_rejects_bad_fields_by_name(field: str, value) -> None:
    with pytest.raises(ValueError, match=f"SynthConfig.{field}"):
        SynthConfig(**{field: value})


def test_config_rejects_min_above_max() -> None:
    with pytest.raises(ValueError, match="max_objects"):
        SynthConfig(min_objects=4, max_objects=3)


def test_config_rejects_unplaceable_objects() -> None:
    with pytest.raises(ValueError, match="max_objects"):
        SynthConfig(extent=1.0, size_max=1.0, size_min=1.0)


# ---------------------------------------------------------------- determinism


def test_render_shapes_and_dtypes() -> None:
    cfg = tiny()
    scene = render_scene(cfg, 0)
    V, H, W = 2, 24, 32
    assert scene["image"].shape == (V, H, W, 3) and scene["image"].dtype == np.uint8
    assert scene["mask"].shape == (V, H, W) and scene["mask"].dtype == np.uint8
    assert scene["depth"].shape == (V, H, W) and scene["depth"].dtype == np.float32
    assert scene["cam2world"].shape == (V, 4, 4) and scene["cam2world"].dtype == np.float32
    assert scene["intrinsics"].shape == (V, 3, 3) and scene["intrinsics"].dtype == np.float32
    assert scene["camera_pos"].shape == (V, 3)
    assert scene["mask"].max() <= len(scene["objects"]) < MAX_OBJECTS + 1
    json.dumps(scene["objects"])  # plain JSON values, ready for the canonical scene


def test_same_seed_same_scene_other_seed_differs() -> None:
    a, b = render_scene(tiny(), 1), render_scene(tiny(), 1)
    for key in ("image", "mask", "depth", "cam2world", "camera_pos"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["objects"] == b["objects"]
    c = render_scene(tiny(seed=1), 1)
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["image"], render_scene(tiny(), 2)["image"])


def same_files(one: Path, two: Path) -> list[Path]:
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
    return files


def test_generate_is_byte_identical_across_runs(tmp_path: Path) -> None:
    cfg = tiny(scenes=4)
    one = generate(cfg, tmp_path / "one", progress=False)
    assert len(same_files(one, generate(cfg, tmp_path / "two", progress=False))) == 4 * 2 * 3 + 2
    other = generate(tiny(scenes=4, seed=7), tmp_path / "other", progress=False)
    assert (one / "images/img_0_0.png").read_bytes() != (other / "images/img_0_0.png").read_bytes()


@pytest.mark.slow  # two spawned workers each import torch: several seconds on a small machine
def test_generate_is_byte_identical_across_workers(tmp_path: Path) -> None:
    cfg = tiny(scenes=4)
    one = generate(cfg, tmp_path / "one", workers=1, progress=False)
    two = generate(cfg, tmp_path / "two", workers=2, progress=False)
    assert len(same_files(one, two)) == 4 * 2 * 3 + 2


# ---------------------------------------------------------------- layout


def test_layout_files_shapes_and_round_trip(tmp_path: Path) -> None:
    cfg = tiny(scenes=3)
    out = generate(cfg, tmp_path / "synth", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # no temporary folder left
    meta = np.load(out / "metadata.npz")
    assert meta["shape"].shape == (3, MAX_OBJECTS) and meta["shape"].dtype.kind == "i"
    assert meta["camera_pos"].shape == (3, 2, 3) and meta["camera_pos"].dtype == np.float32
    for key in ("color", "material", "size", "rotation"):
        assert meta[key].shape == (3, MAX_OBJECTS), key
    assert meta["position"].shape == (3, MAX_OBJECTS, 3)
    np.testing.assert_array_equal(meta["seed"], [0, 0, 0])
    info = json.loads((out / "synth.json").read_text())
    assert info["config"]["height"] == 24 and info["depth_scale"] == DEPTH_SCALE

    for s in range(3):  # scene s written in a batch == scene s rendered alone
        scene = render_scene(cfg, s)
        objects = scene["objects"]
        n = len(objects)
        assert (meta["shape"][s] > 0).sum() == n and (meta["shape"][s, n:] == 0).all()
        assert [SHAPES[c - 1] for c in meta["shape"][s, :n]] == [o["shape"] for o in objects]
        assert [list(COLORS)[c - 1] for c in meta["color"][s, :n]] == [o["color"] for o in objects]
        assert list(meta["material"][s, :n]) == [1 if o["material"] == "rubber" else 2 for o in objects]
        np.testing.assert_array_equal(meta["position"][s, :n], np.float32([o["position"] for o in objects]))
        np.testing.assert_array_equal(meta["size"][s, :n], np.float32([o["size"] for o in objects]))
        np.testing.assert_array_equal(meta["camera_pos"][s], scene["camera_pos"])
        for v in range(2):
            img = Image.open(out / f"images/img_{s}_{v}.png")
            mask = Image.open(out / f"masks/masks_{s}_{v}.png")
            depth = Image.open(out / f"depths/depths_{s}_{v}.png")
            assert (img.mode, mask.mode, img.size) == ("RGB", "L", (32, 24))
            np.testing.assert_array_equal(np.asarray(img), scene["image"][v])
            np.testing.assert_array_equal(np.asarray(mask), scene["mask"][v])
            raw = np.asarray(depth)
            assert raw.dtype == np.uint16 or depth.mode.startswith("I")
            decoded = raw.astype(np.float64) / DEPTH_SCALE
            assert np.abs(decoded - scene["depth"][v]).max() <= 1 / DEPTH_SCALE


def test_generate_replaces_old_output_and_cleans_up_on_failure(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "synth"
    generate(tiny(scenes=2), out, progress=False)
    generate(tiny(scenes=1), out, progress=False)
    assert np.load(out / "metadata.npz")["shape"].shape[0] == 1
    assert not (out / "images/img_1_0.png").exists()  # the old folder is gone, not merged

    def broken(cfg, index):
        raise RuntimeError("boom")

    monkeypatch.setattr(synth, "render_scene", broken)
    with pytest.raises(RuntimeError, match="boom"):
        generate(tiny(scenes=2), tmp_path / "fresh", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]


def test_generate_never_replaces_a_folder_it_did_not_write(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an earlier `objdisc synth` output"):
        generate(tiny(scenes=1), theirs, progress=False)
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"] and (theirs / "notes.txt").read_text() == "mine"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(FileExistsError):
        generate(tiny(scenes=1), tmp_path / "a-file", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    generate(tiny(scenes=1), empty, progress=False)  # an empty folder is fine
    assert (empty / "synth.json").is_file()


# ---------------------------------------------------------------- geometry


def test_masks_and_depth_are_the_nearest_surface() -> None:
    cfg = tiny()
    for index in range(3):
        scene = render_scene(cfg, index)
        objects = scene["objects"]
        o, d = rays(scene)
        mask, depth = scene["mask"].reshape(-1), scene["depth"].reshape(-1).astype(np.float64)
        assert (depth < cfg.far).all()  # the default camera sees only ground and objects
        x = o + depth[:, None] * d
        ground = -o[:, 2] / d[:, 2]
        for k, obj in enumerate(objects, start=1):
            sel = mask == k
            assert np.abs(sdf(obj, x[sel])).max() < 1e-3, "hit point is not on the labelled object"
            assert (depth[sel] < ground[sel]).all(), "an object pixel lies behind the ground"
        bg = mask == 0
        np.testing.assert_allclose(x[bg, 2], 0.0, atol=1e-3)
        assert (scene_sdf(objects, x[bg]) > -1e-4).all()
        # nothing is nearer than the recorded hit: the ray stays outside every object on its way
        for s in np.linspace(0.0, 1.0, 160):
            t = s * (depth - 2e-3)
            assert (scene_sdf(objects, o + t[:, None] * d) > -1e-6).all(), "an object is nearer than the mask says"


def test_cameras_look_at_the_centre() -> None:
    cfg = tiny(views=4)
    scene = render_scene(cfg, 0)
    c2w = scene["cam2world"].astype(np.float64)
    R, eye = c2w[:, :3, :3], c2w[:, :3, 3]
    np.testing.assert_allclose(R.transpose(0, 2, 1) @ R, np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    np.testing.assert_allclose(eye, scene["camera_pos"], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(eye, axis=-1), cfg.camera_distance, rtol=1e-5)
    np.testing.assert_allclose(np.degrees(np.arcsin(eye[:, 2] / cfg.camera_distance)), cfg.camera_elevation, atol=1e-3)
    azimuth = np.degrees(np.arctan2(eye[:, 1], eye[:, 0]))
    np.testing.assert_allclose(np.diff(azimuth) % 360, 90.0, atol=1e-3)  # evenly spaced on the ring
    assert R[:, 2, 1].max() < 0  # image "down" points down in the world (level cameras, up = +z)
    np.testing.assert_allclose(R[:, 2, 0], 0.0, atol=1e-6)  # image "right" is horizontal
    # the four rays around the image centre pass the origin within a pixel's footprint
    o, d = rays(scene)
    o, d = o.reshape(4, 24, 32, 3)[:, 11:13, 15:17], d.reshape(4, 24, 32, 3)[:, 11:13, 15:17]
    miss = np.linalg.norm(np.cross(d, -o), axis=-1)
    assert miss.max() < cfg.camera_distance / scene["intrinsics"][0, 0, 0]


def test_object_counts_and_no_interpenetration() -> None:
    cfg = SynthConfig(scenes=40, min_objects=3, max_objects=5, **TINY)
    counts = []
    for index in range(40):
        objects = synth.sample_objects(cfg, np.random.default_rng([cfg.seed, index]))
        counts.append(len(objects))
        for i, a in enumerate(objects):
            assert cfg.size_min <= a["size"] <= cfg.size_max
            assert a["position"][2] == a["size"]  # resting on the ground
            assert max(abs(a["position"][0]), abs(a["position"][1])) <= cfg.extent
            for b in objects[i + 1 :]:
                gap = math.dist(a["position"][:2], b["position"][:2])
                ra = a["size"] * (math.sqrt(2) if a["shape"] == "cube" else 1)
                rb = b["size"] * (math.sqrt(2) if b["shape"] == "cube" else 1)
                assert gap >= ra + rb + cfg.margin - 1e-5
    assert min(counts) >= 3 and max(counts) <= 5 and len(set(counts)) > 1


# ---------------------------------------------------------------- shading


def test_ground_is_lambertian_with_cast_shadows() -> None:
    cfg = tiny(height=36, width=48)
    for index in range(3):
        scene = render_scene(cfg, index)
        light, objects = scene["light"], scene["objects"]
        o, d = rays(scene)
        mask, depth = scene["mask"].reshape(-1), scene["depth"].reshape(-1).astype(np.float64)
        ground = mask == 0
        rgb = scene["image"].reshape(-1, 3)[ground].astype(int)
        lit = np.round(255 * cfg.ground_albedo * (cfg.ambient + cfg.diffuse * light[2]))
        dark = np.round(255 * cfg.ground_albedo * cfg.ambient)
        assert set(np.unique(rgb)) <= {lit, dark}
        shadowed = rgb[:, 0] == dark
        assert 0 < shadowed.sum() < ground.sum()
        # independent check: march from each ground point towards the light through the SDFs
        x = (o + depth[:, None] * d)[ground]
        assert (blocked(objects, x, light) == shadowed).mean() > 0.98


def test_colours_and_materials() -> None:
    cfg = tiny()
    colours, highlight = set(), False
    for index in range(6):
        scene = render_scene(cfg, index)
        img, mask = scene["image"].reshape(-1, 3).astype(float), scene["mask"].reshape(-1)
        for k, obj in enumerate(scene["objects"], start=1):
            colours.add(obj["color"])
            px = img[mask == k]
            if not len(px):
                continue
            albedo = np.array(COLORS[obj["color"]]) / 255.0
            if obj["material"] == "rubber":  # matte: every pixel is albedo times one brightness
                brightness = px / 255.0 / albedo
                rounding = 1 / (255 * albedo.min())  # two channels off by half a level each
                assert (brightness.max(1) - brightness.min(1) <= rounding + 1e-9).all()
            else:  # metal: white highlights rise above the brightest diffuse value
                diffuse_max = 255 * albedo * (cfg.ambient + cfg.diffuse * cfg.metal_diffuse)
                highlight |= bool((px > diffuse_max + 20).any())
    assert len(colours) >= 2 and highlight


def test_rubber_objects_follow_lambert_with_independent_normals() -> None:
    cfg = tiny(height=36, width=48)
    checked = 0
    for index in range(4):
        scene = render_scene(cfg, index)
        light, objects = scene["light"], scene["objects"]
        o, d = rays(scene)
        x = o + scene["depth"].reshape(-1, 1).astype(np.float64) * d
        img, mask = scene["image"].reshape(-1, 3).astype(float), scene["mask"].reshape(-1)
        for k, obj in enumerate(objects, start=1):
            sel = mask == k
            if obj["material"] != "rubber" or not sel.any():
                continue
            p = x[sel]
            # normal = gradient of the object's SDF (central differences), shadow by marching the SDFs
            n = np.stack([sdf(obj, p + e) - sdf(obj, p - e) for e in 1e-4 * np.eye(3)], -1)
            n /= np.linalg.norm(n, axis=-1, keepdims=True)
            lambert = np.clip(n @ light, 0.0, None)
            lit = ~blocked(objects, p + 2e-3 * n, light)
            expected = np.array(COLORS[obj["color"]]) * (cfg.ambient + cfg.diffuse * lambert * lit)[:, None]
            good = np.abs(img[sel] - expected).max(-1) <= 1.0
            assert good.mean() > 0.9, (obj, good.mean())
            checked += len(p)
    assert checked > 50
