"""ClevrTex source on a fixture written as the generator writes it: palette PNG masks, RGB(A) PNG
renders and JSON metadata in ``clevrtex_<v>/<idx // 1000>/``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from objdisc.data.schema import validate_scene
from objdisc.data.sources.base import SourceError
from objdisc.data.sources.clevrtex import ClevrTex

# The start of ClevrTex's mask palette: index 0 black, then red, green, blue, yellow.
PALETTE = [0, 0, 0, 255, 0, 0, 0, 128, 0, 0, 0, 255, 255, 255, 0] + [200, 200, 255] * 251


def write_scene(folder: Path, variant: str, index: int, rng: np.random.Generator, *, rgba: bool = False,
                size=(240, 320), num_objects: int = 3) -> dict:
    sub = folder / f"clevrtex_{variant}" / str(index // 1000)
    sub.mkdir(parents=True, exist_ok=True)
    stem = f"CLEVRTEX_{variant}_{index:06d}"
    image = rng.integers(0, 256, size=(*size, 4 if rgba else 3), dtype=np.uint8)
    Image.fromarray(image, mode="RGBA" if rgba else "RGB").save(sub / f"{stem}.png")
    mask = rng.integers(0, num_objects + 1, size=size, dtype=np.uint8)
    flat = Image.fromarray(mask, mode="P")
    flat.putpalette(PALETTE)
    flat.save(sub / f"{stem}_flat.png")
    objects = [
        {"shape": "cube", "size": 0.6, "rotation": 10.0 * k, "3d_coords": [k, 0.0, 0.5],
         "pixel_coords": [10, 20, 30.0], "index": k, "color": "red", "material": "Metal"}
        for k in range(num_objects)
    ]
    meta = {"num_objects": num_objects, "split": variant, "image_index": index,
            "image_filename": f"{stem}.png", "ground_material": "Concrete", "objects": objects}
    (sub / f"{stem}.json").write_text(json.dumps(meta))
    return {"image": image[..., :3], "mask": mask, "objects": objects}


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    written = {i: write_scene(tmp_path, "full", i, rng, rgba=(i % 3 == 0)) for i in range(10)}
    return tmp_path, written


def test_splits_are_fractions_of_the_sorted_index(dataset):
    root, _ = dataset
    source = ClevrTex(root)
    assert source.splits() == {"test": 1, "val": 1, "train": 8}
    assert [s["meta"]["index"] for s in source.read("test", 0, 1)] == [0]
    assert [s["meta"]["index"] for s in source.read("val", 0, 1)] == [1]
    assert [s["meta"]["index"] for s in source.read("train", 0, 8)] == list(range(2, 10))
    assert [s["__key__"] for s in source.read("train", 6, 8)] == ["00000008", "00000009"]


def test_fields_match_what_was_written(dataset):
    root, written = dataset
    scenes = list(ClevrTex(root / "clevrtex_full").read("train", 0, 8))  # variant folder as root works too
    for scene in scenes:
        validate_scene(scene)
        truth = written[scene["meta"]["index"]]
        assert scene["image"].shape == (1, 240, 320, 3)
        np.testing.assert_array_equal(scene["image"][0], truth["image"])  # alpha dropped, RGB exact
        np.testing.assert_array_equal(scene["mask"][0], truth["mask"])  # raw palette indices, not colours
        assert [o["id"] for o in scene["objects"]] == [1, 2, 3]
        assert [o["visible"] for o in scene["objects"]] == [bool((truth["mask"] == k).any()) for k in (1, 2, 3)]
        assert [o["rotation"] for o in scene["objects"]] == [o["rotation"] for o in truth["objects"]]
        assert scene["meta"]["ground_material"] == "Concrete"
        assert "cam2world" not in scene and "depth" not in scene


def test_outd_is_one_test_split(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        write_scene(tmp_path, "outd", i, rng)
    source = ClevrTex(tmp_path, variant="outd")
    assert source.splits() == {"test": 3}
    assert [s["meta"]["index"] for s in source.read("test", 0, 3)] == [0, 1, 2]


def test_index_errors_name_the_problem(tmp_path):
    rng = np.random.default_rng(2)
    for i in (0, 1, 3):
        write_scene(tmp_path, "camo", i, rng)
    with pytest.raises(SourceError, match="numbers missing.*: 2"):  # gap at 2
        ClevrTex(tmp_path, variant="camo")

    write_scene(tmp_path, "camo", 2, rng)
    (tmp_path / "clevrtex_camo" / "0" / "CLEVRTEX_camo_000002_flat.png").unlink()
    with pytest.raises(SourceError, match="CLEVRTEX_camo_000002_flat.png"):
        ClevrTex(tmp_path, variant="camo")

    write_scene(tmp_path, "camo", 2, rng)
    dup = tmp_path / "clevrtex_camo" / "9"
    dup.mkdir()
    for f in (tmp_path / "clevrtex_camo" / "0").glob("CLEVRTEX_camo_000001*"):
        (dup / f.name).write_bytes(f.read_bytes())
    with pytest.raises(SourceError, match="duplicate index 1"):
        ClevrTex(tmp_path, variant="camo")

    with pytest.raises(SourceError, match="unknown variant"):
        ClevrTex(tmp_path, variant="nope")


def test_scene_errors_name_the_file(tmp_path):
    rng = np.random.default_rng(3)
    write_scene(tmp_path, "vbg", 0, rng, size=(240, 321))
    for i in range(1, 10):
        write_scene(tmp_path, "vbg", i, rng)
    source = ClevrTex(tmp_path, variant="vbg")
    with pytest.raises(SourceError, match="CLEVRTEX_vbg_000000.png.*expected 320x240"):
        list(source.read("test", 0, 1))

    # A mask id that points past the JSON object list.
    write_scene(tmp_path, "vbg", 1, rng, num_objects=3)
    meta_path = tmp_path / "clevrtex_vbg" / "0" / "CLEVRTEX_vbg_000001.json"
    meta = json.loads(meta_path.read_text())
    meta["objects"] = meta["objects"][:1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(SourceError, match="CLEVRTEX_vbg_000001_flat.png.*beyond"):
        list(ClevrTex(tmp_path, variant="vbg").read("val", 0, 1))

    (tmp_path / "clevrtex_vbg" / "0" / "CLEVRTEX_vbg_000005.json").unlink()
    with pytest.raises(SourceError, match="CLEVRTEX_vbg_000005.json"):
        list(ClevrTex(tmp_path, variant="vbg").read("train", 3, 4))
