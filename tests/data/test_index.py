"""index.json on known data: counts, checksums, statistics, the key table, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from objdisc.data.index import build_index, load_index, objects_in, verify_index
from objdisc.data.schema import Scene, scene_key
from objdisc.data.storage import FORMATS, StorageError, read_scene, sha256_file, shard_name, write_shard

COLOURS = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 30]], dtype=np.uint8)


def known_scene(index: int, views: int = 2, size: int = 4) -> Scene:
    """Scene ``index`` has ``index % 4`` objects (mask ids 1..k, id 3 skipped for k = 3 so that
    ids are not simply 1..k) and a uniform image of colour ``COLOURS[index % 4]``."""
    k = index % 4
    mask = np.zeros((views, size, size), dtype=np.uint8)
    ids = [1, 2, 4][:k]
    for j, obj in enumerate(ids):
        mask[j % views, j, :] = obj
    image = np.broadcast_to(COLOURS[index % 4], (views, size, size, 3)).copy()
    return {
        "__key__": scene_key(index),
        "image": image,
        "mask": mask,
        "objects": [{"id": i} for i in range(7)],  # deliberately not the mask's count
        "meta": {"source": "test", "index": index, "split": "x", "views": list(range(views))},
    }


def make_dataset(root: Path, fmt: str) -> dict[str, list[Scene]]:
    splits = {"train": [known_scene(i) for i in range(10)], "val": [known_scene(i) for i in range(10, 13)]}
    write_shard(root / shard_name("train", 0, fmt), splits["train"][:6])
    write_shard(root / shard_name("train", 1, fmt), splits["train"][6:])
    write_shard(root / shard_name("val", 0, fmt), splits["val"])
    return splits


@pytest.mark.parametrize("fmt", FORMATS)
def test_index_on_known_data(tmp_path: Path, fmt: str) -> None:
    splits = make_dataset(tmp_path, fmt)
    (tmp_path / f"{shard_name('train', 2, fmt)}.tmp-99").write_bytes(b"half a shard")  # ignored
    params = {"source": "test", "shard_scenes": 6, "skipped": [{"index": 99, "reason": "empty"}]}
    index = build_index(tmp_path, params, progress=False)

    assert json.loads((tmp_path / "index.json").read_text()) == index == load_index(tmp_path)
    assert index["version"] == 1 and index["format"] == fmt
    assert index["conversion"] == {"source": "test", "shard_scenes": 6}
    assert index["skipped"] == [{"index": 99, "reason": "empty"}]
    assert index["schema"] == {
        "image": {"dtype": "uint8", "shape": [2, 4, 4, 3]},
        "mask": {"dtype": "uint8", "shape": [2, 4, 4]},
    }

    train = index["splits"]["train"]
    assert train["scenes"] == 10 and index["splits"]["val"]["scenes"] == 3
    assert [s["path"] for s in train["shards"]] == [shard_name("train", i, fmt) for i in (0, 1)]
    assert [s["scenes"] for s in train["shards"]] == [6, 4]
    for shard in train["shards"]:
        assert shard["sha256"] == sha256_file(tmp_path / shard["path"])
        assert shard["bytes"] == (tmp_path / shard["path"]).stat().st_size

    stats = index["statistics"]["train"]
    counts = [i % 4 for i in range(10)]  # 0 1 2 3 0 1 2 3 0 1
    assert stats["objects_per_scene"] == {
        "mean": pytest.approx(np.mean(counts)),
        "min": 0,
        "max": 3,
        "histogram": [3, 3, 2, 2],
    }
    pixels = np.concatenate([s["image"].reshape(-1, 3) for s in splits["train"]]) / 255.0
    assert stats["pixel_mean"] == pytest.approx(pixels.mean(axis=0).tolist(), abs=1e-12)
    assert stats["pixel_std"] == pytest.approx(pixels.std(axis=0).tolist(), abs=1e-12)
    assert (stats["views"], stats["height"], stats["width"]) == (2, 4, 4)
    assert index["statistics"]["val"]["objects_per_scene"]["histogram"] == [1, 0, 1, 1]  # 2, 3, 0

    # The key table reaches every scene without a scan.
    assert set(index["keys"]) == {"train", "val"}
    assert len(index["keys"]["train"]) == 10
    assert index["keys"]["train"][scene_key(7)][0] == shard_name("train", 1, fmt)
    for split, scenes in splits.items():
        for scene in scenes:
            shard, offset = index["keys"][split][scene["__key__"]]
            got = read_scene(tmp_path / shard, offset)
            np.testing.assert_array_equal(got["mask"], scene["mask"])
            assert got["__key__"] == scene["__key__"]

    assert verify_index(tmp_path) == []


def test_objects_without_mask_counts_the_list() -> None:
    scene = known_scene(3)
    assert objects_in(scene) == 3
    del scene["mask"]
    assert objects_in(scene) == 7


def test_schema_marks_axes_that_differ_between_splits(tmp_path: Path) -> None:
    write_shard(tmp_path / "train-000000.tar", [known_scene(0, views=2)])
    write_shard(tmp_path / "test-000000.tar", [known_scene(1, views=3)])
    index = build_index(tmp_path, progress=False)
    assert index["schema"]["image"] == {"dtype": "uint8", "shape": [None, 4, 4, 3]}
    assert index["statistics"]["test"]["views"] == 3


def test_verify_index_finds_changed_missing_and_extra_shards(tmp_path: Path) -> None:
    make_dataset(tmp_path, "webdataset")
    build_index(tmp_path, progress=False)
    write_shard(tmp_path / "train-000001.tar", [known_scene(i) for i in range(20, 24)])  # same size
    (tmp_path / "val-000000.tar").unlink()
    write_shard(tmp_path / "val-000001.tar", [known_scene(30)])
    problems = verify_index(tmp_path)
    assert len(problems) == 3
    assert "train-000001.tar: sha256 differs" in problems[0]
    assert "val-000000.tar: missing shard of split 'val'" in problems[1]
    assert "val-000001.tar: shard not in the index" in problems[2]


def test_bad_shard_is_named_and_no_index_written(tmp_path: Path) -> None:
    make_dataset(tmp_path, "hdf5")
    (tmp_path / "train-000002.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(StorageError, match="train-000002.h5"):
        build_index(tmp_path, progress=False)
    assert not (tmp_path / "index.json").exists()
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []


def test_inconsistent_datasets_are_refused(tmp_path: Path) -> None:
    write_shard(tmp_path / "train-000000.tar", [known_scene(0)])
    write_shard(tmp_path / "train-000001.tar", [known_scene(0)])
    with pytest.raises(StorageError, match="key '00000000' also in train-000000.tar"):
        build_index(tmp_path, progress=False)
    write_shard(tmp_path / "train-000001.tar", [known_scene(1, size=5)])
    with pytest.raises(StorageError, match="train-000001.tar: scene '00000001' has layout"):
        build_index(tmp_path, progress=False)
    write_shard(tmp_path / "train-000001.h5", [known_scene(1)])
    (tmp_path / "train-000001.tar").unlink()
    with pytest.raises(StorageError, match="several formats"):
        build_index(tmp_path, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StorageError, match="empty: no shards"):
        build_index(empty, progress=False)


def test_load_index_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="index.json: no dataset index"):
        load_index(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(StorageError, match="index.json: not valid JSON"):
        load_index(tmp_path)
    (tmp_path / "index.json").write_text('{"version": 7}')
    with pytest.raises(StorageError, match="index version 7"):
        load_index(tmp_path)
