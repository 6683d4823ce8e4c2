"""clevr-npz source on a fixture laid out as the ClevrTex framework's conversion writes it:
``clevr_with_masks/<i // 10000>/<i>.npz`` (compressed, every TFRecord feature with the reader's
shapes) plus ``manifest_ind.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from objdisc.data.schema import validate_scene
from objdisc.data.sources.base import SourceError
from objdisc.data.sources.clevr_npz import SPLITS, ClevrNpz
from objdisc.data.sources.multi_object import CLEVR, ClevrWithMasks
from tests.data.sources.fixtures_deepmind import expected_objects, random_scene, write_py

OBJECT_COUNTS = (3, 7, 6, 10, 4)


def write_npz_dataset(root: Path, scenes: list[dict], *, manifest: bool = True, stem: str = "{i}") -> Path:
    base = root / "clevr_with_masks"
    index = {}
    for i, arrays in enumerate(scenes):
        rel = f"{i // 10000}/{stem.format(i=i)}.npz"
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(base / rel, **{name: arrays[name] for name in CLEVR.features()})
        index[str(i)] = rel
    if manifest:
        (base / "manifest_ind.json").write_text(json.dumps(index))
    return base


@pytest.fixture(scope="module")
def scenes() -> list[dict]:
    rng = np.random.default_rng(20)
    return [random_scene(CLEVR, rng, n) for n in OBJECT_COUNTS]


def test_reads_every_field(tmp_path: Path, scenes):
    write_npz_dataset(tmp_path, scenes)
    source = ClevrNpz(tmp_path, splits={"all": [0, None], "tail": [3, 5]})
    assert source.splits() == {"all": 5, "tail": 2}
    out = list(source.read("all", 0, 5))
    for i, (scene, arrays) in enumerate(zip(out, scenes)):
        validate_scene(scene)
        assert scene["__key__"] == f"{i:08d}"
        np.testing.assert_array_equal(scene["image"][0], arrays["image"])
        np.testing.assert_array_equal(scene["mask"][0], arrays["ids"])
        assert scene["objects"] == expected_objects(CLEVR, arrays)
        assert scene["meta"] == {"source": "clevr-npz", "variant": None, "split": "all", "index": i, "views": [0]}
    assert [s["meta"]["index"] for s in source.read("tail", 1, 2)] == [4]
    # Root may also be the clevr_with_masks folder itself.
    assert ClevrNpz(tmp_path / "clevr_with_masks", splits={"all": [0, None]}).splits() == {"all": 5}


def test_framework_splits_and_clevr6(tmp_path: Path, scenes):
    write_npz_dataset(tmp_path, scenes)
    assert ClevrNpz(tmp_path).splits() == {"test": 5, "val": 0, "train": 0}
    members = {name: split.members(100_000, None, None) for name, split in SPLITS.items()}
    assert members == {"test": range(0, 15_000), "val": range(15_000, 30_000), "train": range(30_000, 100_000)}
    clevr6 = ClevrNpz(tmp_path, max_objects=6)  # the framework's clevr6: Σ visibility ≤ 7
    assert clevr6.splits() == {"test": 3, "val": 0, "train": 0}
    assert [s["meta"]["index"] for s in clevr6.read("test", 0, 3)] == [0, 2, 4]
    assert [s["meta"]["index"] for s in clevr6.read("test", 2, 3)] == [4]


def test_same_scene_as_the_tfrecord_route(tmp_path: Path, scenes):
    write_npz_dataset(tmp_path / "npz", scenes[:1])
    (tmp_path / "tf").mkdir()
    write_py(tmp_path / "tf" / CLEVR.file, CLEVR, scenes[:1])
    a = next(ClevrNpz(tmp_path / "npz", splits={"s": [0, 1]}).read("s", 0, 1))
    b = next(ClevrWithMasks(tmp_path / "tf", splits={"s": [0, 1]}).read("s", 0, 1))
    for name in ("__key__", "objects"):
        assert a[name] == b[name]
    for name in ("image", "mask"):
        np.testing.assert_array_equal(a[name], b[name])


def test_manifest_rebuilt_when_missing_or_corrupt(tmp_path: Path, scenes):
    base = write_npz_dataset(tmp_path / "missing", scenes[:3], manifest=False, stem="CLEVR_masks_{i:06d}")
    (base / "0" / "notes_x.npz").write_bytes(b"")  # no integer after the last '_': ignored
    source = ClevrNpz(tmp_path / "missing", splits={"all": [0, None]})
    assert source.index == {"0": "0/CLEVR_masks_000000.npz", "1": "0/CLEVR_masks_000001.npz", "2": "0/CLEVR_masks_000002.npz"}
    np.testing.assert_array_equal(list(source.read("all", 2, 3))[0]["mask"][0], scenes[2]["ids"])
    assert not (base / "manifest_ind.json").exists()  # the raw folder is never written

    base = write_npz_dataset(tmp_path / "corrupt", scenes[:2])
    (base / "manifest_ind.json").write_text('{"0": "0/0.npz", ')
    assert ClevrNpz(tmp_path / "corrupt", splits={"all": [0, None]}).splits() == {"all": 2}


def test_bad_folders_and_files(tmp_path: Path, scenes):
    with pytest.raises(SourceError, match="no manifest_ind.json and no <i>.npz files"):
        ClevrNpz(tmp_path)
    base = write_npz_dataset(tmp_path / "gap", scenes[:3])
    (base / "manifest_ind.json").write_text(json.dumps({"0": "0/0.npz", "2": "0/2.npz"}))
    with pytest.raises(SourceError, match=r"not 0\.\.N-1 \(missing \[1\]\)"):
        ClevrNpz(tmp_path / "gap")

    base = write_npz_dataset(tmp_path / "bad", scenes[:3])
    bad = dict(scenes[1])
    bad["mask"] = bad["mask"].copy()
    bad["mask"][4, 100, 200, 0] = 7
    np.savez_compressed(base / "0" / "1.npz", **{name: bad[name] for name in CLEVR.features()})
    del_key = {name: scenes[2][name] for name in CLEVR.features() if name != "material"}
    np.savez_compressed(base / "0" / "2.npz", **del_key)
    source = ClevrNpz(tmp_path / "bad", splits={"all": [0, None]})
    assert len(list(source.read("all", 0, 1))) == 1
    with pytest.raises(SourceError, match=r"0/1\.npz: mask value 7 in entity channel 4 at pixel \(row 100, col 200\)"):
        list(source.read("all", 1, 2))
    with pytest.raises(SourceError, match=r"0/2\.npz: missing arrays \['material'\]"):
        list(source.read("all", 2, 3))
    (base / "0" / "0.npz").unlink()
    with pytest.raises(SourceError, match=r"missing .*0/0\.npz \(record 0 of the manifest\)"):
        list(source.read("all", 0, 1))
    with pytest.raises(SourceError, match="unknown option"):
        ClevrNpz(tmp_path / "bad", variant="x")
