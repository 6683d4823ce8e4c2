"""Scene → "views" sample: keys, shapes, ray geometry, sampling rules, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from objdisc.data.schema import validate_scene
from objdisc.data.synth import SynthConfig, render_scene
from objdisc.data.views import ViewsConfig, make_render_rays, make_views_sample
from objdisc.geometry import pixel_rays, transform_points

H, W = 12, 16


def make_scene(index: int = 0, views: int = 3, coded: bool = False) -> dict:
    """A small synthetic 3D scene in the canonical schema; ``coded``: view v is a flat colour
    (30·(v+1), 0, 0) so samples reveal which view a pixel came from."""
    s = render_scene(SynthConfig(views=views, height=H, width=W), index)
    scene = {
        "__key__": f"{index:08d}",
        "image": s["image"],
        "mask": s["mask"],
        "depth": s["depth"],
        "cam2world": s["cam2world"],
        "intrinsics": s["intrinsics"],
        "objects": [],
        "meta": {"source": "test"},
    }
    if coded:
        scene["image"] = np.zeros_like(s["image"])
        scene["image"][..., 0] = (30 * (np.arange(views) + 1)).astype(np.uint8)[:, None, None]
    return validate_scene(scene)


def view_of(pixels: torch.Tensor) -> set[int]:
    return set(torch.round(pixels[:, 0] * 255 / 30).long().sub(1).tolist())


def test_keys_shapes_and_dtypes():
    cfg = ViewsConfig(num_input_views=2, num_target_rays=50, targets="others")
    out = make_views_sample(make_scene(views=4), cfg, torch.Generator().manual_seed(0))
    expected = {
        "input_images": ((2, 3, H, W), torch.float32),
        "input_camera_pos": ((2, 3), torch.float32),
        "input_rays": ((2, H, W, 3), torch.float32),
        "input_cam2world": ((2, 4, 4), torch.float32),
        "input_intrinsics": ((2, 3, 3), torch.float32),
        "input_masks": ((2, H, W), torch.int64),
        "input_depths": ((2, H, W), torch.float32),
        "target_pixels": ((50, 3), torch.float32),
        "target_camera_pos": ((50, 3), torch.float32),
        "target_rays": ((50, 3), torch.float32),
        "target_masks": ((50,), torch.int64),
        "target_depths": ((50,), torch.float32),
        "transform": ((4, 4), torch.float32),
    }
    assert set(out) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert tuple(out[key].shape) == shape and out[key].dtype == dtype, key
    assert 0.0 <= out["input_images"].min() and out["input_images"].max() <= 1.0
    torch.testing.assert_close(out["target_rays"].norm(dim=-1), torch.ones(50))
    batch = default_collate([out, out])
    assert batch["input_images"].shape == (2, 2, 3, H, W)


def test_rays_pixels_masks_and_depths_come_from_the_sampled_pixels():
    scene = make_scene()
    cfg = ViewsConfig(num_input_views=1, num_target_rays=64, targets="others")
    out = make_views_sample(scene, cfg, torch.Generator().manual_seed(1))
    c2w = torch.from_numpy(scene["cam2world"])
    k = torch.from_numpy(scene["intrinsics"])
    origins, dirs = pixel_rays(c2w, k, H, W)
    # Input rays are the pixel rays of the chosen input view.
    v_in = int(torch.argmin((c2w[:, :3, 3] - out["input_camera_pos"][0]).norm(dim=-1)))
    torch.testing.assert_close(out["input_rays"][0], dirs[v_in])
    torch.testing.assert_close(out["input_images"][0], torch.from_numpy(scene["image"][v_in]).permute(2, 0, 1) / 255.0)
    # Every target ray is exactly one pixel ray of a target view, with that pixel's values.
    flat_dirs = dirs.reshape(-1, 3)
    flat_origins = origins.reshape(-1, 3)
    exact = "donot_use_mm_for_euclid_dist"
    dist = torch.cdist(out["target_rays"], flat_dirs, compute_mode=exact) + torch.cdist(
        out["target_camera_pos"], flat_origins, compute_mode=exact
    )
    idx = dist.argmin(dim=1)
    assert dist.min(dim=1).values.max() < 1e-5
    views = idx // (H * W)
    assert not (views == v_in).any()
    image = torch.from_numpy(scene["image"]).reshape(-1, 3).float() / 255.0
    torch.testing.assert_close(out["target_pixels"], image[idx])
    assert torch.equal(out["target_masks"], torch.from_numpy(scene["mask"]).reshape(-1).long()[idx])
    torch.testing.assert_close(out["target_depths"], torch.from_numpy(scene["depth"]).reshape(-1)[idx])
    assert len(set(idx.tolist())) == 64  # without replacement


def test_deterministic_given_the_generator():
    scene = make_scene()
    cfg = ViewsConfig(num_input_views=1, num_target_rays=32, targets="all", canonical=True)
    a = make_views_sample(scene, cfg, torch.Generator().manual_seed(7))
    b = make_views_sample(scene, cfg, torch.Generator().manual_seed(7))
    c = make_views_sample(scene, cfg, torch.Generator().manual_seed(8))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["target_rays"], c["target_rays"])


def test_targets_all_include_the_input_view_and_others_exclude_it():
    scene = make_scene(coded=True)
    every_pixel = 3 * H * W
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        out = make_views_sample(scene, ViewsConfig(num_target_rays=every_pixel, targets="all"), g)
        assert view_of(out["target_pixels"]) == {0, 1, 2}
        out = make_views_sample(scene, ViewsConfig(num_target_rays=2 * H * W, targets="others"), g)
        (v_in,) = view_of(out["input_images"][0].flatten(1).T)
        assert view_of(out["target_pixels"]) == {0, 1, 2} - {v_in}


def test_zero_rays_means_every_target_pixel_in_order():
    scene = make_scene()
    cfg = ViewsConfig(num_target_rays=0, targets="others", input_view_ids=(1,))
    out = make_views_sample(scene, cfg, torch.Generator().manual_seed(0))
    image = torch.from_numpy(scene["image"][[0, 2]]).float() / 255.0
    torch.testing.assert_close(out["target_pixels"], image.reshape(-1, 3))
    c2w, k = torch.from_numpy(scene["cam2world"][[0, 2]]), torch.from_numpy(scene["intrinsics"][[0, 2]])
    _, dirs = pixel_rays(c2w, k, H, W)
    torch.testing.assert_close(out["target_rays"], dirs.reshape(-1, 3))
    with pytest.raises(ValueError, match="num_target_rays"):
        ViewsConfig(num_target_rays=-1)


def test_short_scenes_sample_with_replacement_only_when_allowed():
    scene = make_scene()
    too_many = 2 * H * W + 5
    out = make_views_sample(scene, ViewsConfig(num_target_rays=too_many), torch.Generator().manual_seed(0))
    assert out["target_rays"].shape == (too_many, 3)
    with pytest.raises(ValueError, match="sample_with_replacement_if_short"):
        make_views_sample(
            scene,
            ViewsConfig(num_target_rays=too_many, sample_with_replacement_if_short=False),
            torch.Generator().manual_seed(0),
        )


def test_downsample_strides_the_input_view_and_its_intrinsics():
    scene = make_scene()
    cfg = ViewsConfig(num_target_rays=16, downsample=1, input_view_ids=(1,))
    out = make_views_sample(scene, cfg, torch.Generator().manual_seed(0))
    c2w = torch.from_numpy(scene["cam2world"][1])
    k = torch.from_numpy(scene["intrinsics"][1])
    _, full = pixel_rays(c2w, k, H, W)
    image = torch.from_numpy(scene["image"][1]).float() / 255.0
    assert out["input_images"].shape == (1, 3, H // 2, W // 2)
    torch.testing.assert_close(out["input_images"][0], image[1::2, 1::2].permute(2, 0, 1))
    torch.testing.assert_close(out["input_rays"][0], full[1::2, 1::2])
    _, from_k = pixel_rays(out["input_cam2world"][0], out["input_intrinsics"][0], H // 2, W // 2)
    torch.testing.assert_close(out["input_rays"][0], from_k, atol=1e-6, rtol=0)
    assert torch.equal(out["input_masks"][0], torch.from_numpy(scene["mask"][1]).long()[1::2, 1::2])


def test_canonical_frame_puts_the_input_camera_at_the_origin():
    scene = make_scene()
    g = torch.Generator().manual_seed(3)
    cfg = ViewsConfig(num_target_rays=40, targets="all", canonical=True)
    out = make_views_sample(scene, cfg, g)
    torch.testing.assert_close(out["input_cam2world"][0], torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["input_camera_pos"][0], torch.zeros(3), atol=1e-5, rtol=0)
    # Same draws in world coordinates map onto the canonical ones through ``transform``.
    world = make_views_sample(scene, ViewsConfig(num_target_rays=40, targets="all"), torch.Generator().manual_seed(3))
    t = out["transform"]
    for key, translate in [("target_rays", False), ("target_camera_pos", True), ("input_rays", False)]:
        expected = transform_points(world[key], t, translate=translate)
        torch.testing.assert_close(out[key], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(out["target_depths"], world["target_depths"])
    torch.testing.assert_close(world["transform"], torch.eye(4))


def test_fixed_input_views_and_bad_input():
    scene = make_scene(coded=True)
    cfg = ViewsConfig(num_target_rays=8, input_view_ids=(2,))
    out = make_views_sample(scene, cfg, torch.Generator().manual_seed(0))
    assert view_of(out["input_images"][0].flatten(1).T) == {2}
    with pytest.raises(ValueError, match="input_view_ids"):
        make_views_sample(scene, ViewsConfig(input_view_ids=(5,)), torch.Generator())
    with pytest.raises(ValueError, match="needs 4"):
        make_views_sample(scene, ViewsConfig(num_input_views=3, targets="others"), torch.Generator())
    flat = {k: v for k, v in scene.items() if k not in ("cam2world", "intrinsics")}
    with pytest.raises(ValueError, match="cam2world"):
        make_views_sample(flat, ViewsConfig(), torch.Generator())


def test_make_render_rays_applies_the_model_frame():
    scene = make_scene()
    c2w = torch.from_numpy(scene["cam2world"][0])
    k = torch.from_numpy(scene["intrinsics"][0])
    o, d = make_render_rays(c2w, k, H, W)
    o_ref, d_ref = pixel_rays(c2w, k, H, W)
    torch.testing.assert_close(d, d_ref)
    torch.testing.assert_close(o, o_ref)
    cfg = ViewsConfig(num_target_rays=4, canonical=True, input_view_ids=(0,))
    out = make_views_sample(scene, cfg, torch.Generator())
    o, d = make_render_rays(c2w, k, H, W, out["transform"])
    torch.testing.assert_close(d, out["input_rays"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(o, torch.zeros_like(o), atol=1e-5, rtol=0)
