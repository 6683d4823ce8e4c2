"""shapes3d source on a file laid out as DeepMind's ``3dshapes.h5``: ``images`` [N,64,64,3] uint8
and ``labels`` [N,6] float64 (floor_hue, wall_hue, object_hue, scale, shape, orientation)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import objdisc.data.sources.shapes3d as shapes3d
from objdisc.data.schema import validate_scene
from objdisc.data.sources.base import SourceError
from objdisc.data.sources.shapes3d import FACTORS, SPLITS, Shapes3D


def write_shapes(path: Path, n: int, *, labels: bool = True, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(40)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    factors = np.stack(
        [rng.choice(np.linspace(0, 0.9, 10), n), rng.choice(np.linspace(0, 0.9, 10), n),
         rng.choice(np.linspace(0, 0.9, 10), n), rng.choice(np.linspace(0.75, 1.25, 8), n),
         rng.integers(0, 4, n).astype(float), rng.choice(np.linspace(-30, 30, 15), n)],
        axis=1,
    )
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        if labels:
            f.create_dataset("labels", data=factors)
    return images, factors


def test_images_and_factors(tmp_path: Path, monkeypatch):
    images, factors = write_shapes(tmp_path / "3dshapes.h5", 9)
    source = Shapes3D(tmp_path, splits={"train": [0, 6], "val": [7, None]})
    assert source.splits() == {"train": 6, "val": 2}
    monkeypatch.setattr(shapes3d, "BLOCK_BYTES", 2 * 64 * 64 * 3)  # two images per slice
    for split, indices in (("train", range(0, 6)), ("val", range(7, 9))):
        out = list(source.read(split, 0, len(indices)))
        assert [s["meta"]["index"] for s in out] == list(indices)
        for scene, i in zip(out, indices):
            validate_scene(scene)
            assert "mask" not in scene and scene["__key__"] == f"{i:08d}"
            np.testing.assert_array_equal(scene["image"][0], images[i])
            assert scene["objects"] == [dict(zip(FACTORS, factors[i].tolist()))]
            assert scene["meta"] == {"source": "shapes3d", "split": split, "index": i, "views": [0]}
    assert [s["meta"]["index"] for s in source.read("train", 3, 5)] == [3, 4]
    assert Shapes3D(tmp_path / "3dshapes.h5").splits() == {"train": 9, "val": 0, "test": 0}


def test_default_ranges_and_bad_files(tmp_path: Path):
    members = {name: split.members(480_000, None, None) for name, split in SPLITS.items()}
    assert members == {"train": range(0, 400_000), "val": range(400_001, 430_000), "test": range(430_001, 460_000)}
    write_shapes(tmp_path / "3dshapes.h5", 2, labels=False)
    assert next(Shapes3D(tmp_path).read("train", 0, 1))["objects"] == []
    (tmp_path / "big").mkdir()
    write_shapes(tmp_path / "big" / "3dshapes.h5", 2, size=32)
    with pytest.raises(SourceError, match=r"'images' is uint8 \[2, 32, 32, 3\], expected uint8 \[N, 64, 64, 3\]"):
        Shapes3D(tmp_path / "big")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"missing .*empty/3dshapes\.h5"):
        Shapes3D(tmp_path / "empty")
    with pytest.raises(SourceError, match=r"unknown option\(s\) \['max_objects'\]"):
        Shapes3D(tmp_path, max_objects=1)
