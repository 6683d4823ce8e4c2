"""multi-object-hdf5 source on files written as object-discovery-pytorch's export writes them:
one gzip dataset per TFRecord feature, ``chunks=True``, ``maxshape=(None, ...)``."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import objdisc.data.sources.multi_object_hdf5 as hdf5_source
from objdisc.data.schema import validate_scene
from objdisc.data.sources.base import SourceError
from objdisc.data.sources.multi_object import CLEVR, TETROMINOES
from objdisc.data.sources.multi_object_hdf5 import DATASETS, MultiObjectHDF5
from tests.data.sources.fixtures_deepmind import expected_objects, random_scene


def write_h5(path: Path, layout, scenes: list[dict]) -> None:
    with h5py.File(path, "w") as f:
        for name in layout.features():
            data = np.stack([s[name] for s in scenes])
            f.create_dataset(name, data=data, compression="gzip", chunks=True, maxshape=(None, *data.shape[1:]))


@pytest.fixture(scope="module")
def tetrominoes(tmp_path_factory) -> tuple[Path, list[dict]]:
    rng = np.random.default_rng(30)
    scenes = [random_scene(TETROMINOES, rng, n) for n in (3, 1, 2, 3, 0, 2, 3, 1, 2, 3)]
    folder = tmp_path_factory.mktemp("h5")
    write_h5(folder / "tetrominoes.h5", TETROMINOES, scenes)
    return folder, scenes


def test_tetrominoes_every_field(tetrominoes):
    folder, scenes = tetrominoes
    source = MultiObjectHDF5(folder, splits={"a": [0, 6], "b": [6, None]})
    assert source.dataset == "tetrominoes"
    assert source.splits() == {"a": 6, "b": 4}
    out = list(source.read("b", 0, 4))
    for i, (scene, arrays) in enumerate(zip(out, scenes[6:]), start=6):
        validate_scene(scene)
        assert scene["__key__"] == f"{i:08d}"
        np.testing.assert_array_equal(scene["image"][0], arrays["image"])
        np.testing.assert_array_equal(scene["mask"][0], arrays["ids"])
        assert scene["objects"] == expected_objects(TETROMINOES, arrays)
        assert scene["meta"] == {"source": "multi-object-hdf5", "variant": "tetrominoes", "split": "b", "index": i, "views": [0]}
    # HHousen's ranges, capped at the 10-record file.
    assert MultiObjectHDF5(folder / "tetrominoes.h5").splits() == {"train": 10, "val": 0, "test": 0}


def test_filter_counts_objects_not_visibility_sum(tetrominoes, monkeypatch):
    folder, _ = tetrominoes
    source = MultiObjectHDF5(folder, max_objects=2, splits={"all": [0, None], "tail": [5, 10]})
    # Objects per record: 3 1 2 3 0 2 3 1 2 3 → at most two objects: records 1 2 4 5 7 8.
    # (HHousen's Σ visibility ≤ 2 would keep only 1 4 7: it counts the background too.)
    assert source.splits() == {"all": 6, "tail": 3}
    assert [s["meta"]["index"] for s in source.read("all", 0, 6)] == [1, 2, 4, 5, 7, 8]
    monkeypatch.setattr(hdf5_source, "BLOCK_BYTES", 1)  # one record per slice: every block path
    assert [s["meta"]["index"] for s in source.read("all", 2, 5)] == [4, 5, 7]
    assert [s["meta"]["index"] for s in source.read("tail", 1, 3)] == [7, 8]


def test_hhousen_ranges_on_full_files():
    members = {d: {s: r.members(100_000, None, None) for s, r in t.items()} for d, (_, _, t) in DATASETS.items()}
    assert members["clevr"] == {"train": range(0, 70_000), "val": range(70_001, 85_000), "test": range(85_001, 100_000)}
    assert members["tetrominoes"] == {"train": range(0, 60_000), "val": range(60_001, 75_000), "test": range(75_001, 90_000)}


def test_clevr_true_size(tmp_path: Path):
    rng = np.random.default_rng(31)
    scenes = [random_scene(CLEVR, rng, n) for n in (4, 9)]
    write_h5(tmp_path / "clevr_with_masks.h5", CLEVR, scenes)
    source = MultiObjectHDF5(tmp_path, splits={"all": [0, None]})
    assert source.dataset == "clevr"
    out = list(source.read("all", 0, 2))
    for arrays, scene in zip(scenes, out):
        validate_scene(scene)
        np.testing.assert_array_equal(scene["image"][0], arrays["image"])
        np.testing.assert_array_equal(scene["mask"][0], arrays["ids"])
        assert scene["objects"] == expected_objects(CLEVR, arrays)
    assert MultiObjectHDF5(tmp_path, max_objects=6, splits={"all": [0, None]}).splits() == {"all": 1}


def test_bad_files(tmp_path: Path, tetrominoes):
    folder, scenes = tetrominoes
    with pytest.raises(SourceError, match="unknown dataset 'sprites'"):
        MultiObjectHDF5(folder, dataset="sprites")
    with pytest.raises(SourceError, match="cannot tell the dataset"):
        MultiObjectHDF5(tmp_path)
    with pytest.raises(SourceError, match=r"missing .*clevr_with_masks\.h5"):
        MultiObjectHDF5(folder, dataset="clevr")
    with h5py.File(tmp_path / "tetrominoes.h5", "w") as f:
        for name in TETROMINOES.features():
            f.create_dataset(name, data=np.stack([s[name] for s in scenes[:2]]))
        del f["color"]
        f.create_dataset("color", data=np.zeros((2, 4, 4), np.float32))
    with pytest.raises(SourceError, match=r"dataset 'color' has shape \[2, 4, 4\], expected \[N, \[4, 3\]\]"):
        MultiObjectHDF5(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "tetrominoes.h5").write_bytes(b"not hdf5")
    with pytest.raises(SourceError, match="not a readable HDF5 file"):
        MultiObjectHDF5(tmp_path / "x")
    bad = [dict(s) for s in scenes[:2]]
    bad[1]["mask"] = bad[1]["mask"].copy()
    bad[1]["mask"][:, 3, 4, 0] = 0  # pixel (3, 4) now has no entity
    (tmp_path / "y").mkdir()
    write_h5(tmp_path / "y" / "tetrominoes.h5", TETROMINOES, bad)
    with pytest.raises(SourceError, match=r"tetrominoes\.h5: record 1: pixel \(row 3, col 4\) is covered by 0"):
        list(MultiObjectHDF5(tmp_path / "y", splits={"all": [0, 2]}).read("all", 0, 2))
