"""RAVENS source on HDF5 files written the way the HHousen ravens generator appends them."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from objdisc.data.schema import validate_scene
from objdisc.data.sources.base import SourceError
from objdisc.data.sources.ravens import Ravens

H, W = 24, 32


def write_ravens(path, rng, counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One reset per scene: three camera images, their label maps and the object count, each
    appended to resizable gzip datasets (demos.py)."""
    colors, segms = [], []
    with h5py.File(path, "w") as f:
        for idx, count in enumerate(counts):
            color = rng.integers(0, 256, size=(3, H, W, 3), dtype=np.uint8)
            segm = rng.integers(0, 4 + count, size=(3, H, W)).astype(np.uint8)
            entry = {"color": color, "segm": segm, "num_objects_on_table": np.array([count])}
            for key, value in entry.items():
                if idx == 0:
                    f.create_dataset(key, data=value, dtype=value.dtype, maxshape=(None, *value.shape[1:]),
                                     compression="gzip", chunks=True)
                else:
                    f[key].resize(f[key].shape[0] + value.shape[0], axis=0)
                    f[key][-value.shape[0]:] = value
            colors.append(color)
            segms.append(segm)
    return np.stack(colors), np.stack(segms)


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    train = write_ravens(tmp_path / "ravens_robot_data_train.h5", rng, [3, 8, 5, 2])
    test = write_ravens(tmp_path / "ravens_robot_data_test.h5", rng, [4, 1])
    return tmp_path, {"train": train, "test": test}


def test_scenes_group_three_views(dataset):
    root, written = dataset
    source = Ravens(root)
    assert source.splits() == {"train": 4, "test": 2}
    for split, (colors, segms) in written.items():
        scenes = list(source.read(split, 0, 10))
        assert [s["meta"]["index"] for s in scenes] == list(range(len(colors)))
        for scene in scenes:
            validate_scene(scene)
            i = scene["meta"]["index"]
            assert scene["image"].shape == (3, H, W, 3) and scene["meta"]["views"] == [0, 1, 2]
            np.testing.assert_array_equal(scene["image"], colors[i])
            np.testing.assert_array_equal(scene["mask"], segms[i])
            assert [o["id"] for o in scene["objects"]] == list(range(1, 12))
            assert [o["role"] for o in scene["objects"][:4]] == ["table", "robot", "arm", "object"]
            assert [o["visible"] for o in scene["objects"]] == [k in segms[i] for k in range(1, 12)]
    assert [s["meta"]["num_objects_on_table"] for s in source.read("train", 0, 4)] == [3, 8, 5, 2]


def test_max_objects_filter(dataset):
    root, _ = dataset
    source = Ravens(root, max_objects=4)
    assert source.splits() == {"train": 2, "test": 2}
    assert [s["__key__"] for s in source.read("train", 0, 2)] == ["00000000", "00000003"]


def test_errors_name_the_file(tmp_path):
    rng = np.random.default_rng(1)
    colors, segms = write_ravens(tmp_path / "ravens_x_test.h5", rng, [2, 2])
    with h5py.File(tmp_path / "ravens_x_test.h5", "a") as f:
        f["segm"][4, 0, 0] = 12
    with pytest.raises(SourceError, match=r"ravens_x_test.h5 scene 1 \(images 3-5\): label id 12 beyond"):
        list(Ravens(tmp_path).read("test", 0, 2))

    with h5py.File(tmp_path / "ravens_y_train.h5", "w") as f:
        f["color"] = colors[:1].reshape(3, H, W, 3)[:2]
        f["segm"] = segms[:1].reshape(3, H, W)[:2]
        f["num_objects_on_table"] = np.array([2])
    with pytest.raises(SourceError, match="ravens_y_train.h5: 2 images for 1 scenes"):
        Ravens(tmp_path)
