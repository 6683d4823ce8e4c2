"""CLEVR v1.0 source on a fixture in the release layout (RGBA PNGs + scenes JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from objdisc.data.schema import validate_scene
from objdisc.data.sources.base import SourceError
from objdisc.data.sources.clevr import Clevr

COUNTS = {"train": 3, "val": 2, "test": 2}


def make_object(k: int) -> dict:
    return {"color": "red", "size": "large", "shape": "cube", "material": "rubber",
            "3d_coords": [k, -k, 0.7], "rotation": 12.5 * k, "pixel_coords": [100 + k, 50, 12.0]}


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "CLEVR_v1.0"
    written = {}
    for split, n in COUNTS.items():
        folder = base / "images" / split
        folder.mkdir(parents=True)
        scenes = []
        for i in range(n):
            rgba = rng.integers(0, 256, size=(320, 480, 4), dtype=np.uint8)
            rgba[..., 3] = 255
            name = f"CLEVR_{split}_{i:06d}.png"
            Image.fromarray(rgba, mode="RGBA").save(folder / name)
            objects = [make_object(k) for k in range(i + 3)]
            scenes.append({"split": split, "image_index": i, "image_filename": name, "objects": objects,
                           "relationships": {"left": [[] for _ in objects]}, "directions": {}})
            written[split, i] = (rgba[..., :3], objects)
        if split != "test":  # the release has no test scene graphs
            (base / "scenes").mkdir(exist_ok=True)
            (base / "scenes" / f"CLEVR_{split}_scenes.json").write_text(
                json.dumps({"info": {"split": split, "version": "1.0"}, "scenes": scenes}))
    return tmp_path, written


def test_splits_and_fields(dataset):
    root, written = dataset
    source = Clevr(root)
    assert source.splits() == COUNTS
    for split, n in COUNTS.items():
        scenes = list(source.read(split, 0, n))
        assert [s["meta"]["index"] for s in scenes] == list(range(n))
        for scene in scenes:
            validate_scene(scene)
            image, objects = written[split, scene["meta"]["index"]]
            assert scene["image"].shape == (1, 320, 480, 3)
            np.testing.assert_array_equal(scene["image"][0], image)
            assert scene["objects"] == (objects if split != "test" else [])
            assert "mask" not in scene
    assert [s["__key__"] for s in source.read("train", 1, 3)] == ["00000001", "00000002"]


def test_root_may_be_the_release_folder(dataset):
    root, _ = dataset
    assert Clevr(root / "CLEVR_v1.0").splits() == COUNTS


def test_errors_name_the_file(dataset):
    root, _ = dataset
    base = root / "CLEVR_v1.0"
    Image.new("RGBA", (320, 240)).save(base / "images" / "val" / "CLEVR_val_000001.png")
    with pytest.raises(SourceError, match="CLEVR_val_000001.png.*expected 480x320"):
        list(Clevr(root).read("val", 0, 2))

    (base / "images" / "train" / "CLEVR_train_000001.png").unlink()
    with pytest.raises(SourceError, match="missing .*CLEVR_train_000001.png"):
        Clevr(root)


def test_scene_graph_must_match_the_images(tmp_path):
    folder = tmp_path / "images" / "val"
    folder.mkdir(parents=True)
    Image.new("RGBA", (480, 320)).save(folder / "CLEVR_val_000000.png")
    with pytest.raises(SourceError, match="missing .*CLEVR_val_scenes.json"):
        list(Clevr(tmp_path).read("val", 0, 1))
    (tmp_path / "scenes").mkdir()
    bad = {"scenes": [{"image_index": 0, "image_filename": "CLEVR_val_000007.png", "objects": []}]}
    (tmp_path / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps(bad))
    with pytest.raises(SourceError, match="CLEVR_val_000007.png"):
        list(Clevr(tmp_path).read("val", 0, 1))
