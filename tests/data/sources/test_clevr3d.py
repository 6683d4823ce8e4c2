"""The CLEVR3D reader on a fixture written by hand in the ObSuRF layout (PIL + numpy)."""

import numpy as np
import pytest
import torch
from PIL import Image

from objdisc.data.schema import validate_scene
from objdisc.data.sources import SourceError, get_source
from objdisc.geometry import pixel_rays

H, W, V = 6, 8, 3


def write_clevr3d(root, n=5, rgba=False, depth=True, shape=None):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    if depth:
        (root / "depths").mkdir()
    if shape is None:
        shape = np.zeros((n, 10), dtype=np.int64)
        shape[:, :3] = 1
    cam = rng.normal(size=(n, V, 3)) * 3 + np.array([10.0, 0.0, 6.0])
    np.savez(root / "metadata.npz", shape=shape, camera_pos=cam.astype(np.float32), color=rng.integers(1, 9, size=(n, 10)))
    written = {}
    for s in range(n):
        for v in range(V):
            img = rng.integers(0, 256, size=(H, W, 4 if rgba else 3), dtype=np.uint8)
            mask = rng.integers(0, 4, size=(H, W), dtype=np.uint8)
            Image.fromarray(img).save(root / f"images/img_{s}_{v}.png")
            Image.fromarray(mask).save(root / f"masks/masks_{s}_{v}.png")
            if depth:
                d = rng.integers(100, 60000, size=(H, W)).astype(np.uint16)
                Image.fromarray(d).save(root / f"depths/depths_{s}_{v}.png")
                written[s, v, "depth"] = d
            written[s, v] = (img[..., :3], mask)
    return cam, written


def reference_rays(pos):
    """ObSuRF's rays: CLEVR pinhole looking at the origin, up +z, pixel-centre offsets."""
    d = -pos / np.linalg.norm(pos)
    r = np.cross(d, [0, 0, 1.0])
    r /= np.linalg.norm(r)
    u = np.cross(d, r)
    u /= np.linalg.norm(u)
    rays = np.zeros((H, W, 3))
    for i in range(H):
        for j in range(W):
            h = (-1 + (2 * j + 1) / W) * 0.016
            v = (-1 + (2 * i + 1) / H) * 0.012
            ray = 0.035 * d + h * r + v * u
            rays[i, j] = ray / np.linalg.norm(ray)
    return rays


def test_fields_equal_what_was_written(tmp_path):
    cam, written = write_clevr3d(tmp_path, rgba=True)
    source = get_source("clevr3d")(tmp_path, splits={"train": [0, 3], "test": [3, 5]})
    assert source.splits() == {"train": 3, "test": 2}
    scenes = list(source.read("test", 0, 2))
    assert [s["__key__"] for s in scenes] == ["00000003", "00000004"]
    for scene in scenes:
        validate_scene(scene)
        idx = scene["meta"]["index"]
        for v in range(V):
            img, mask = written[idx, v]
            np.testing.assert_array_equal(scene["image"][v], img)
            np.testing.assert_array_equal(scene["mask"][v], mask)
            np.testing.assert_allclose(scene["depth"][v], written[idx, v, "depth"] / 1638.4, rtol=1e-6)
            origins, dirs = pixel_rays(torch.from_numpy(scene["cam2world"][v]), torch.from_numpy(scene["intrinsics"][v]), H, W)
            np.testing.assert_allclose(dirs.numpy(), reference_rays(cam[idx, v].astype(np.float64)), atol=1e-5)
            np.testing.assert_allclose(origins[0, 0].numpy(), cam[idx, v], atol=1e-5)
        assert [o["id"] for o in scene["objects"]] == [1, 2, 3]
        assert all("color" in o for o in scene["objects"])


def test_scenes_with_too_many_objects_are_filtered(tmp_path):
    shape = np.zeros((4, 10), dtype=np.int64)
    shape[:, :3] = 1
    shape[1, :8] = 1  # 8 objects: beyond CLEVR3D's 6
    write_clevr3d(tmp_path, n=4, shape=shape)
    source = get_source("clevr3d")(tmp_path, splits={"train": [0, 4]})
    assert [s["meta"]["index"] for s in source.read("train", 0, 4)] == [0, 2, 3]


def test_bad_input_names_the_file(tmp_path):
    write_clevr3d(tmp_path, n=2, depth=False)
    (tmp_path / "masks/masks_1_2.png").unlink()
    source = get_source("clevr3d")(tmp_path, splits={"train": [0, 2]})
    assert "depth" not in next(source.read("train", 0, 1))
    with pytest.raises(SourceError, match="masks_1_2.png"):
        list(source.read("train", 1, 2))
    Image.fromarray(np.full((H, W), 11, np.uint8)).save(tmp_path / "masks/masks_0_0.png")
    with pytest.raises(SourceError, match="beyond the entity count"):
        list(source.read("train", 0, 1))
    with pytest.raises(SourceError, match="does not exist"):
        get_source("clevr3d")(tmp_path / "nowhere")
    with pytest.raises(SourceError, match="unknown source"):
        get_source("clevr4d")
