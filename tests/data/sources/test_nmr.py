"""NMR source on a fixture in DVR's layout; cameras are checked against an independent
re-implementation of stelzner/srt's ray formula, not against the module's maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from objdisc.data.schema import validate_scene
from objdisc.data.sources.base import SourceError
from objdisc.data.sources.nmr import NMR
from objdisc.geometry import pixel_rays

CLASSES = {"02691156": ["plane_a", "plane_b", "plane_c"], "03001627": ["chair_a", "chair_b"]}
SPLIT_OF = {"plane_a": "train", "plane_b": "test", "plane_c": "train", "chair_a": "val", "chair_b": "train"}


def rotation(rng: np.random.Generator, proper: bool = True) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q


def dvr_cameras(rng: np.random.Generator, proper: bool = True) -> dict[str, np.ndarray]:
    """DVR-style matrices: world_mat = world→camera [R|t]; camera_mat a projective 4×4 with focal
    2.1875 in [−1,1] units (plus a small principal-point shift and skew to exercise the general case)."""
    cams = {}
    for v in range(24):
        world_mat = np.eye(4)
        world_mat[:3, :3] = rotation(rng, proper)
        world_mat[:3, 3] = rng.normal(size=3) + [0, 0, 2.7]
        camera_mat = np.array([[2.1875, 0.01, 0.02, 0], [0, 2.1875 * 1.01, -0.03, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        cams[f"world_mat_{v}"] = world_mat
        cams[f"world_mat_inv_{v}"] = np.linalg.inv(world_mat)
        cams[f"camera_mat_{v}"] = camera_mat
        cams[f"camera_mat_inv_{v}"] = np.linalg.inv(camera_mat)
    return cams


def reference_rays(cams: dict[str, np.ndarray], v: int) -> tuple[np.ndarray, np.ndarray]:
    """srt's NMRDataset ray formula, written out from its description."""
    rot = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    world_mat_inv = rot @ cams[f"world_mat_inv_{v}"]
    grid = np.linspace(-1, 1, 64)
    xmap, ymap = np.meshgrid(grid, grid)  # x along columns
    points = np.stack([xmap, ymap, np.ones_like(xmap), np.zeros_like(xmap)], -1)
    rays = (points @ (world_mat_inv @ cams[f"camera_mat_inv_{v}"]).T)[..., :3]
    return world_mat_inv[:3, 3], rays / np.linalg.norm(rays, axis=-1, keepdims=True)


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "NMR_Dataset"
    meta = {c: {"id": c, "name": f"class {c}"} for c in CLASSES}
    base.mkdir()
    (base / "metadata.yaml").write_text(yaml.safe_dump(meta))
    written = {}
    for class_id, scenes in CLASSES.items():
        for split in ("train", "val", "test"):
            ids = [s for s in scenes if SPLIT_OF[s] == split]
            # Blank lines are skipped by the reference (length ≤ 1 with the newline).
            (base / class_id / f"softras_{split}.lst").parent.mkdir(exist_ok=True)
            (base / class_id / f"softras_{split}.lst").write_text("".join(f"{s}\n\n" for s in ids))
        for scene in scenes:
            folder = base / class_id / scene
            (folder / "image").mkdir(parents=True)
            images = rng.integers(0, 256, size=(24, 64, 64, 3), dtype=np.uint8)
            for v in range(24):
                Image.fromarray(images[v]).save(folder / "image" / f"{v:04d}.png")
            cams = dvr_cameras(rng)
            np.savez(folder / "cameras.npz", **cams)
            written[scene] = (images, cams)
    return tmp_path, written


def test_splits_follow_the_softras_lists(dataset):
    root, _ = dataset
    source = NMR(root)
    assert source.splits() == {"train": 3, "val": 1, "test": 1}
    names = [s["meta"]["scene"] for s in source.read("train", 0, 3)]
    assert names == ["plane_a", "plane_c", "chair_b"]  # class order of metadata.yaml, list order within
    assert [s["meta"]["scene"] for s in source.read("val", 0, 1)] == ["chair_a"]
    assert [s["meta"]["scene"] for s in source.read("test", 0, 1)] == ["plane_b"]


def test_images_and_cameras_reproduce_the_reference(dataset):
    root, written = dataset
    for scene in NMR(root / "NMR_Dataset").read("train", 0, 3):
        validate_scene(scene)
        images, cams = written[scene["meta"]["scene"]]
        np.testing.assert_array_equal(scene["image"], images)
        c2w = torch.from_numpy(scene["cam2world"])
        assert torch.allclose(c2w[:, :3, :3] @ c2w[:, :3, :3].transpose(1, 2), torch.eye(3).expand(24, 3, 3),
                              atol=1e-6)
        assert torch.all(torch.linalg.det(c2w[:, :3, :3]) > 0)
        origins, dirs = pixel_rays(c2w, torch.from_numpy(scene["intrinsics"]), 64, 64)
        for v in range(24):
            position, rays = reference_rays(cams, v)
            assert np.abs(dirs[v].numpy() - rays).max() < 1e-5
            assert np.abs(origins[v].numpy() - position).max() < 1e-5
        k = scene["intrinsics"]
        assert np.all(k[:, 0, 0] > 0) and np.all(k[:, 1, 1] > 0)
        np.testing.assert_allclose(k[:, 0, 0], 2.1875 * 31.5, rtol=1e-4)  # focal in pixels: f·(W−1)/2


def test_errors_name_the_file(dataset):
    root, _ = dataset
    folder = root / "NMR_Dataset" / "02691156" / "plane_a"
    np.savez(folder / "cameras.npz", **dvr_cameras(np.random.default_rng(1), proper=False))
    with pytest.raises(SourceError, match="plane_a/cameras.npz view 0: mirrored"):
        list(NMR(root).read("train", 0, 1))

    Image.new("RGB", (64, 32)).save(folder / "image" / "0005.png")
    with pytest.raises(SourceError, match="0005.png is 64x32"):
        list(NMR(root).read("train", 0, 1))

    (root / "NMR_Dataset" / "03001627" / "softras_val.lst").unlink()
    with pytest.raises(SourceError, match="03001627/softras_val.lst"):
        NMR(root)
