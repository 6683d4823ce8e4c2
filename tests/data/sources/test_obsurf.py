"""ObSuRF-MSN and ObSuRF sprites sources on fixtures in ObSuRF's formats (numpy npz, PIL PNGs).

Rays are checked against an independent implementation of ObSuRF's camera formula,
and depth against the Euclidean distances the fixture was drawn from."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from objdisc.data.schema import validate_scene
from objdisc.data.sources.base import SourceError
from objdisc.data.sources.obsurf import ObsurfMSN, ObsurfSprites, npz_member
from objdisc.geometry import pixel_rays

N = 90002  # reaches into the test range (90000-100000) so every split has members
WRITTEN = [0, 1, 2, 80000, 90000, 90001]


def obsurf_rays(c_pos: np.ndarray, width: int = 320, height: int = 240) -> np.ndarray:
    """ObSuRF's get_camera_rays, written out from its description."""
    d = -c_pos / np.linalg.norm(c_pos)
    r = np.cross(d, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    u = np.cross(d, r)
    u /= np.linalg.norm(u)
    h = (-1 + (2 * np.arange(width) + 1) / width) * 0.016
    v = (-1 + (2 * np.arange(height) + 1) / height) * 0.012
    rays = 0.035 * d + h[None, :, None] * r + v[:, None, None] * u
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def msn(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("obsurf_msn")
    rng = np.random.default_rng(0)
    shape = np.zeros((N, 4), dtype=np.int64)
    shape[:, :2] = 1
    shape[1, :3] = 7  # three objects: dropped by max_objects=2
    theta = rng.uniform(0, 2 * np.pi, N)
    camera_pos = np.stack([np.stack([11 * np.cos(theta + k), 11 * np.sin(theta + k), 6.0 + k + 0 * theta], -1)
                           for k in range(3)], 1).astype(np.float32)
    shape_file = np.full((N, 4), "", dtype="<U6")
    shape_file[:, 0], shape_file[:, 1] = "chair", "mug"
    np.savez(tmp_path / "metadata.npz", shape=shape, camera_pos=camera_pos, shape_file=shape_file)
    for folder in ("images", "masks", "depths"):
        (tmp_path / folder).mkdir()
    written = {}
    for s in WRITTEN:
        views = []
        for v in range(3):
            image = rng.integers(0, 256, size=(240, 320, 4), dtype=np.uint8)  # RGBA: alpha is dropped
            mask = rng.integers(0, 5, size=(240, 320), dtype=np.uint8)
            euclid = rng.uniform(5, 30, size=(240, 320))
            rays = obsurf_rays(camera_pos[s, v].astype(np.float64))
            z = euclid * (rays @ (-camera_pos[s, v] / np.linalg.norm(camera_pos[s, v])))
            stored = np.round(z * 1638.4).astype(np.uint16)
            Image.fromarray(image, mode="RGBA").save(tmp_path / "images" / f"img_{s}_{v}.png")
            Image.fromarray(mask, mode="L").save(tmp_path / "masks" / f"masks_{s}_{v}.png")
            Image.fromarray(stored).save(tmp_path / "depths" / f"depths_{s}_{v}.png")
            views.append((image[..., :3], mask, euclid, stored, rays))
        written[s] = views
    return tmp_path, written, camera_pos


def test_msn_splits_ranges_and_object_filter(msn):
    root, _, _ = msn
    assert ObsurfMSN(root).splits() == {"train": 80000, "val": 500, "test": 2}
    source = ObsurfMSN(root, max_objects=2)
    assert source.splits() == {"train": 79999, "val": 500, "test": 2}
    assert [s["meta"]["index"] for s in source.read("train", 0, 2)] == [0, 2]  # scene 1 has 3 objects
    assert [s["meta"]["index"] for s in source.read("val", 0, 1)] == [80000]
    assert [s["__key__"] for s in source.read("test", 0, 2)] == ["00090000", "00090001"]


def test_msn_fields_cameras_and_depth(msn):
    root, written, camera_pos = msn
    for scene in ObsurfMSN(root).read("test", 0, 2):
        validate_scene(scene)
        s = scene["meta"]["index"]
        assert scene["image"].shape == (3, 240, 320, 3) and scene["meta"]["views"] == [0, 1, 2]
        origins, dirs = pixel_rays(torch.from_numpy(scene["cam2world"]), torch.from_numpy(scene["intrinsics"]),
                                   240, 320)
        for v, (image, mask, euclid, stored, rays) in enumerate(written[s]):
            np.testing.assert_array_equal(scene["image"][v], image)
            np.testing.assert_array_equal(scene["mask"][v], mask)
            assert np.abs(dirs[v].numpy() - rays).max() < 1e-5
            assert np.abs(origins[v].numpy() - camera_pos[s, v]).max() < 1e-5
            cos = rays @ (-camera_pos[s, v] / np.linalg.norm(camera_pos[s, v]))
            np.testing.assert_allclose(scene["depth"][v], stored / 1638.4 / cos, rtol=1e-5)
            assert np.abs(scene["depth"][v] - euclid).max() < 0.5 / 1638.4 / cos.min() + 1e-4
        assert scene["objects"] == [{"id": 1, "shape": 1, "shape_file": "chair"},
                                    {"id": 2, "shape": 1, "shape_file": "mug"}]


def test_msn_errors_name_the_file(msn, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(msn[0], root)
    Image.fromarray(np.full((240, 320), 5, dtype=np.uint8), mode="L").save(root / "masks" / "masks_0_1.png")
    with pytest.raises(SourceError, match="masks_0_1.png: mask id 5 beyond"):
        list(ObsurfMSN(root).read("train", 0, 1))
    Image.new("RGB", (160, 120)).save(root / "images" / "img_2_0.png")
    with pytest.raises(SourceError, match="img_2_0.png is 160x120"):
        list(ObsurfMSN(root).read("train", 2, 3))
    (root / "depths" / "depths_80000_2.png").unlink()
    with pytest.raises(SourceError, match="missing file .*depths_80000_2.png"):
        list(ObsurfMSN(root).read("val", 0, 1))
    (root / "metadata.npz").unlink()
    with pytest.raises(SourceError, match="metadata.npz"):
        ObsurfMSN(root)


def write_sprites(path, rng, n: int, channels: int, entities: int, compressed: bool):
    image = rng.integers(0, 256, size=(n, 64, 64, channels), dtype=np.uint8)
    index = rng.integers(0, entities - 1, size=(n, 64, 64))  # the last entity stays empty
    mask = (np.arange(entities)[None, :, None, None] == index[:, None]).astype(np.uint8)[..., None] * 255
    visibility = rng.uniform(size=(n, entities)).astype(np.float32)
    (np.savez_compressed if compressed else np.savez)(path, image=image, mask=mask, visibility=visibility)
    return image, index, visibility


def test_sprites_splits_masks_and_objects(tmp_path):
    rng = np.random.default_rng(1)
    train = write_sprites(tmp_path / "colored_on_grayscale-train.npz", rng, 5, 3, 6, compressed=False)
    test = write_sprites(tmp_path / "colored_on_grayscale-test.npz", rng, 3, 3, 6, compressed=True)
    write_sprites(tmp_path / "binarized-train.npz", rng, 2, 1, 4, compressed=False)
    source = ObsurfSprites(tmp_path)
    assert source.splits() == {"test": 3, "train": 5}
    assert isinstance(npz_member(tmp_path / "colored_on_grayscale-train.npz", "image", "t"), np.memmap)
    for split, (image, index, visibility) in (("train", train), ("test", test)):
        scenes = list(source.read(split, 1, 3))
        assert [s["meta"]["index"] for s in scenes] == [1, 2]
        for scene in scenes:
            validate_scene(scene)
            i = scene["meta"]["index"]
            np.testing.assert_array_equal(scene["image"][0], image[i])
            np.testing.assert_array_equal(scene["mask"][0], index[i])
            assert [o["id"] for o in scene["objects"]] == [1, 2, 3, 4, 5]  # one per entity channel ≥ 1
            assert [o["visible"] for o in scene["objects"]] == [True] * 4 + [False]  # channel 5 is empty
            assert scene["objects"][0]["visibility"] == pytest.approx(float(visibility[i, 1]))

    binarized = ObsurfSprites(tmp_path, variant="binarized")
    scene = next(binarized.read("train", 0, 1))
    validate_scene(scene)
    assert scene["image"].shape == (1, 64, 64, 3)
    assert np.all(scene["image"][0] == scene["image"][0, :, :, :1])  # grey repeated to RGB


def test_sprites_errors(tmp_path):
    rng = np.random.default_rng(2)
    image, _, _ = write_sprites(tmp_path / "binarized-val.npz", rng, 2, 1, 4, compressed=False)
    mask = np.zeros((2, 4, 64, 64, 1), dtype=np.uint8)  # no entity at all: not a partition
    np.savez(tmp_path / "binarized-val.npz", image=image, mask=mask)
    with pytest.raises(SourceError, match="binarized-val.npz record 0: mask channels"):
        list(ObsurfSprites(tmp_path, variant="binarized").read("val", 0, 1))
    np.savez(tmp_path / "binarized-val.npz", image=image[:, :32], mask=mask)
    with pytest.raises(SourceError, match="binarized-val.npz: image has shape"):
        ObsurfSprites(tmp_path, variant="binarized")
    with pytest.raises(SourceError, match="no colored_on_grayscale-<mode>.npz"):
        ObsurfSprites(tmp_path)
