"""Sketchy source on a fixture laid out as GENESIS' sketchy_preparation.py writes it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from objdisc.data.schema import validate_scene
from objdisc.data.sources.base import SourceError
from objdisc.data.sources.sketchy import Sketchy


def write_episode(processed, split: str, episode: int, rng, frames: int = 2) -> dict[str, np.ndarray]:
    folder = processed / split / f"ep{episode:06d}"
    folder.mkdir(parents=True)
    written = {}
    for t in range(frames):
        for view in ("fl", "fr"):
            for crop in ("full", "c0"):
                name = f"ep{episode:06d}_t{t:03d}_{view}_{crop}.png"
                image = rng.integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
                Image.fromarray(image).save(folder / name)
                written[f"{split}/ep{episode:06d}/{name}"] = image
    return written


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    processed = tmp_path / "processed"
    written = {}
    written.update(write_episode(processed, "train", 2, rng))
    written.update(write_episode(processed, "train", 3, rng))
    written.update(write_episode(processed, "valid", 0, rng, frames=1))
    return tmp_path, written


def test_sorted_glob_without_a_list_file(dataset):
    root, written = dataset
    source = Sketchy(root)
    assert source.splits() == {"train": 16, "valid": 4}
    scenes = list(source.read("train", 0, 16))
    assert [s["meta"]["file"] for s in scenes] == sorted(k for k in written if k.startswith("train/"))
    for scene in scenes:
        validate_scene(scene)
        np.testing.assert_array_equal(scene["image"][0], written[scene["meta"]["file"]])
        assert "mask" not in scene and scene["objects"] == []
    first = scenes[0]["meta"]
    assert (first["episode"], first["frame"], first["camera"], first["crop"]) == (2, 0, "fl", "c0")


def test_list_file_order_and_foreign_prefix(dataset):
    root, written = dataset
    valid = sorted(k for k in written if k.startswith("valid/"))[::-1]
    # GENESIS writes the paths it globbed, with its own data folder in front.
    (root / "processed" / "valid_images.txt").write_text("".join(f"data/sketchy/processed/{k}\n" for k in valid))
    scenes = list(Sketchy(root).read("valid", 1, 3))
    assert [s["meta"]["file"] for s in scenes] == valid[1:3]
    assert [s["meta"]["index"] for s in scenes] == [1, 2]
    np.testing.assert_array_equal(scenes[0]["image"][0], written[valid[1]])


def test_errors_name_the_file(dataset):
    root, _ = dataset
    bad = root / "processed" / "valid" / "ep000000" / "ep000000_t000_fl_full.png"
    Image.new("RGB", (64, 64)).save(bad)
    with pytest.raises(SourceError, match="ep000000_t000_fl_full.png is 64x64"):
        list(Sketchy(root).read("valid", 0, 4))
    with pytest.raises(SourceError, match="missing folder"):
        Sketchy(root / "processed")
