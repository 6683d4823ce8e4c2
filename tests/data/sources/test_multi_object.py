"""DeepMind multi-object TFRecord sources on fixtures in the exact published format.

The ``tf`` tests write the fixtures with TensorFlow itself (GZIP TFRecordWriter, tf.train.Example,
one 1-byte string per pixel element, true image sizes); the others write byte-compatible records
without TensorFlow so that CI without the tf extra still covers the sources.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from objdisc.data.schema import validate_scene
from objdisc.data.sources.base import SourceError
from objdisc.data.sources.multi_object import (
    CLEVR,
    MULTI_DSPRITES,
    OBJECTS_ROOM,
    TETROMINOES,
    ClevrWithMasks,
    MultiDSprites,
    ObjectsRoom,
    SplitRange,
    Tetrominoes,
)
from objdisc.data.tf_example import parse_example, parse_fixed
from objdisc.data.tfrecord import iter_records
from tests.data.sources.fixtures_deepmind import expected_image, expected_objects, random_scene, write_py, write_tf

CASES = [
    (Tetrominoes, None, TETROMINOES, "train"),
    *[(MultiDSprites, v, layout, "train") for v, layout in MULTI_DSPRITES.items()],
    *[(ObjectsRoom, v, layout, "train" if v == "train" else "test") for v, layout in OBJECTS_ROOM.items()],
]
CASE_IDS = ["tetrominoes", *[f"dsprites-{v}" for v in MULTI_DSPRITES], *[f"room-{v}" for v in OBJECTS_ROOM]]


def check_scene(scene: dict, arrays: dict, layout, *, source: str, variant, split: str, index: int) -> None:
    validate_scene(scene)
    h, w, _ = layout.image
    assert scene["__key__"] == f"{index:08d}"
    assert scene["image"].shape == (1, h, w, 3) and scene["mask"].shape == (1, h, w)
    np.testing.assert_array_equal(scene["image"][0], expected_image(arrays))
    np.testing.assert_array_equal(scene["mask"][0], arrays["ids"])
    assert scene["objects"] == expected_objects(layout, arrays)
    assert len(scene["objects"]) == layout.entities - 1
    assert scene["meta"]["source"] == source and scene["meta"]["variant"] == variant
    assert scene["meta"]["split"] == split and scene["meta"]["index"] == index and scene["meta"]["views"] == [0]


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def clevr_tf(tf, tmp_path_factory) -> tuple[Path, list[dict]]:
    """Three CLEVR records at the true 240×320 size with 3, 7 and 5 objects, written by TF."""
    rng = np.random.default_rng(10)
    scenes = [random_scene(CLEVR, rng, n) for n in (3, 7, 5)]
    folder = tmp_path_factory.mktemp("clevr")
    write_tf(folder / CLEVR.file, CLEVR, scenes)
    return folder, scenes


def check_source(source, folder: Path, scenes: list[dict], layout, variant, split: str) -> None:
    counts = source.splits()
    assert counts[split] == len(scenes) and sum(counts.values()) == len(scenes)  # defaults, capped
    out = list(source.read(split, 0, len(scenes)))
    assert len(out) == len(scenes)
    for i, (scene, arrays) in enumerate(zip(out, scenes)):
        check_scene(scene, arrays, layout, source=source.info.name, variant=variant, split=split, index=i)
    # The wire-level parser agrees with the protobuf library on TensorFlow's own bytes.
    raw = next(iter_records(folder / layout.file))
    fixed = parse_fixed(raw, layout.features())
    for name, values in parse_example(raw).items():
        if isinstance(values, list):
            values = np.frombuffer(b"".join(values), np.uint8)
        np.testing.assert_array_equal(fixed[name].reshape(-1), values)


@pytest.mark.tf
@pytest.mark.parametrize("cls,variant,layout,split", CASES, ids=CASE_IDS)
def test_every_dataset_written_by_tensorflow(tf, tmp_path: Path, cls, variant, layout, split):
    rng = np.random.default_rng(0)
    scenes = [random_scene(layout, rng) for _ in range(3)]
    write_tf(tmp_path / layout.file, layout, scenes)
    source = cls(tmp_path, **({"variant": variant} if variant else {}))
    assert source.variant == variant
    check_source(source, tmp_path, scenes, layout, variant, split)


@pytest.mark.parametrize("cls,variant,layout,split", CASES, ids=CASE_IDS)
def test_every_dataset_without_tensorflow(tmp_path: Path, cls, variant, layout, split):
    """The same checks on byte-compatible records written without TF (CI without the tf extra)."""
    rng = np.random.default_rng(7)
    scenes = [random_scene(layout, rng) for _ in range(2)]
    write_py(tmp_path / layout.file, layout, scenes)
    check_source(cls(tmp_path / layout.file), tmp_path, scenes, layout, variant, split)


@pytest.mark.tf
def test_clevr_written_by_tensorflow(clevr_tf):
    folder, scenes = clevr_tf
    check_source(ClevrWithMasks(folder), folder, scenes, CLEVR, None, "train")


@pytest.mark.tf
def test_clevr_objects_and_padding(clevr_tf):
    folder, scenes = clevr_tf
    scene = next(ClevrWithMasks(folder / CLEVR.file).read("train", 1, 2))  # 7 objects
    objects = scene["objects"]
    assert [o["visible"] for o in objects] == [True] * 7 + [False] * 3
    assert objects[7] == {"id": 8, "visible": False}  # padding carries no zero factors
    first = objects[0]
    assert set(first) == {"id", "visible", "x", "y", "z", "pixel_coords", "rotation", "size", "material", "shape", "color"}
    assert first["x"] == float(scenes[1]["x"][1]) and first["pixel_coords"] == scenes[1]["pixel_coords"][1].tolist()
    assert isinstance(first["color"], int) and first["color"] == int(scenes[1]["color"][1])
    ids = scene["mask"][0]
    for k in np.unique(ids[ids > 0]):
        assert objects[k - 1]["id"] == k and objects[k - 1]["visible"]


@pytest.mark.tf
def test_clevr_split_conventions_and_clevr6(clevr_tf):
    folder, scenes = clevr_tf
    assert ClevrWithMasks(folder).splits() == {"train": 3, "test": 0}
    assert ClevrWithMasks(folder, split_convention="clevrtex").splits() == {"test": 3, "val": 0, "train": 0}
    assert ClevrWithMasks(folder, split_convention="hhousen").splits() == {"train": 3, "val": 0, "test": 0}
    clevr6 = ClevrWithMasks(folder, max_objects=6, split_convention="clevrtex")
    assert clevr6.splits() == {"test": 2, "val": 0, "train": 0}
    out = list(clevr6.read("test", 0, 2))
    assert [s["meta"]["index"] for s in out] == [0, 2]
    check_scene(out[1], scenes[2], CLEVR, source="clevr-with-masks", variant=None, split="test", index=2)
    assert out[1]["meta"]["split_convention"] == "clevrtex"
    # A limit counts kept scenes: the first scene with ≤ 6 objects from record 1 on is record 2.
    limited = ClevrWithMasks(folder, max_objects=6, splits={"a": [1, None, 1], "b": [0, 3]})
    assert limited.splits() == {"a": 1, "b": 2}
    assert [s["meta"]["index"] for s in limited.read("a", 0, 1)] == [2]
    with pytest.raises(SourceError, match="unknown split_convention 'iodine'"):
        ClevrWithMasks(folder, split_convention="iodine")


def test_convention_tables_on_a_full_file():
    tables = ClevrWithMasks.CONVENTIONS
    members = {c: {s: r.members(100_000, None, None) for s, r in t.items()} for c, t in tables.items()}
    assert members["slot_attention"] == {"train": range(0, 70_000), "test": range(70_000, 70_320)}
    assert members["clevrtex"] == {"test": range(0, 15_000), "val": range(15_000, 30_000), "train": range(30_000, 100_000)}
    hh = members["hhousen"]
    assert hh["train"] == range(0, 70_000) and hh["val"] == range(70_001, 85_000) and hh["test"] == range(85_001, 100_000)
    objects = np.array([7, 6, 2, 9, 6] * 20_000)
    clevr6_test = SplitRange(70_000, None, 320).members(100_000, objects, 6)
    assert len(clevr6_test) == 320 and clevr6_test[0] == 70_001 and all(objects[clevr6_test] <= 6)
    assert SplitRange(0, 70_000).members(50, None, None) == range(0, 50)  # capped at the file


def test_splits_restart_and_filter_without_tensorflow(tmp_path: Path):
    rng = np.random.default_rng(1)
    counts = [3, 1, 2, 3, 0, 2, 1, 3]
    scenes = [random_scene(TETROMINOES, rng, n) for n in counts]
    write_py(tmp_path / TETROMINOES.file, TETROMINOES, scenes)
    source = Tetrominoes(tmp_path, splits={"train": [0, 5], "val": [5, None]})
    assert source.splits() == {"train": 5, "val": 3}
    val = list(source.read("val", 0, 3))
    for i, scene in enumerate(val):
        check_scene(scene, scenes[5 + i], TETROMINOES, source="tetrominoes", variant=None, split="val", index=5 + i)
    full = list(source.read("train", 0, 5))
    for start in range(5):  # restartable anywhere, any range length
        for stop in range(start, 6):
            part = list(source.read("train", start, stop))
            assert [s["__key__"] for s in part] == [s["__key__"] for s in full[start:stop]]
    np.testing.assert_array_equal(list(source.read("train", 3, 4))[0]["mask"], full[3]["mask"])

    small = Tetrominoes(tmp_path / TETROMINOES.file, max_objects=2, splits={"train": [0, 5], "val": [5, 8]})
    assert small.splits() == {"train": 3, "val": 2}
    assert [s["meta"]["index"] for s in small.read("train", 0, 3)] == [1, 2, 4]
    assert [s["meta"]["index"] for s in small.read("train", 1, 3)] == [2, 4]
    assert [s["meta"]["index"] for s in small.read("val", 0, 2)] == [5, 6]
    empty = list(small.read("val", 0, 2))
    assert empty[0]["objects"][2] == {"id": 3, "visible": False}

    assert Tetrominoes(tmp_path).splits() == {"train": 8, "val": 0, "test": 0}
    with pytest.raises(SourceError, match="unknown split 'validation'"):
        list(source.read("validation", 0, 1))


def test_variant_choice_and_bad_options(tmp_path: Path):
    rng = np.random.default_rng(2)
    layout = MULTI_DSPRITES["colored_on_colored"]
    write_py(tmp_path / layout.file, layout, [random_scene(layout, rng)])
    assert MultiDSprites(tmp_path).variant == "colored_on_colored"  # from the only file present
    assert MultiDSprites(tmp_path / layout.file).variant == "colored_on_colored"
    with pytest.raises(SourceError, match="unknown variant 'colored'"):
        MultiDSprites(tmp_path, variant="colored")
    with pytest.raises(SourceError, match=r"multi_dsprites_binarized\.tfrecords"):
        MultiDSprites(tmp_path, variant="binarized")
    with pytest.raises(SourceError, match=r"unknown option\(s\) \['resolution'\]"):
        MultiDSprites(tmp_path, resolution=64)
    with pytest.raises(SourceError, match="max_objects"):
        MultiDSprites(tmp_path, max_objects=-1)
    with pytest.raises(SourceError, match="unknown compression 'bz2'"):
        MultiDSprites(tmp_path, compression="bz2")
    assert MultiDSprites(tmp_path, compression="GZIP", splits={"a": [0, 1]}).splits() == {"a": 1}
    other = MULTI_DSPRITES["binarized"]
    write_py(tmp_path / other.file, other, [random_scene(other, rng)])
    with pytest.raises(SourceError, match="several variants"):
        MultiDSprites(tmp_path)
    with pytest.raises(SourceError, match="does not exist"):
        MultiDSprites(tmp_path / "nowhere")
    room = OBJECTS_ROOM["train"]
    write_py(tmp_path / room.file, room, [random_scene(room, rng)])
    with pytest.raises(SourceError, match="'max_objects' needs a visibility feature"):
        ObjectsRoom(tmp_path, max_objects=3)
    with pytest.raises(SourceError, match="split 'train'"):
        ObjectsRoom(tmp_path, splits={"train": [5, 2]})


def test_wrong_variant_is_caught_not_misparsed(tmp_path: Path):
    rng = np.random.default_rng(3)
    layout = MULTI_DSPRITES["colored_on_grayscale"]
    path = tmp_path / "sprites.tfrecords"
    write_py(path, layout, [random_scene(layout, rng) for _ in range(2)])
    source = MultiDSprites(path, variant="colored_on_colored", splits={"train": [0, None]})
    with pytest.raises(SourceError, match=r"sprites\.tfrecords: record 0: feature 'mask' has 24576 values, expected 20480"):
        list(source.read("train", 0, 2))


def corrupt_scene(kind: str, rng: np.random.Generator) -> dict:
    arrays = random_scene(TETROMINOES, rng)
    mask = arrays["mask"]  # [4,35,35,1]
    if kind == "value":
        mask[2, 5, 6, 0] = 128
    elif kind == "two":
        mask[:, 7, 8, 0] = 0
        mask[:2, 7, 8, 0] = 255
    else:
        mask[:, 9, 10, 0] = 0
    return arrays


@pytest.mark.parametrize(
    "kind,message",
    [
        ("value", r"record 2: mask value 128 in entity channel 2 at pixel \(row 5, col 6\); expected 0 or 255"),
        ("two", r"record 2: pixel \(row 7, col 8\) is covered by 2 entity masks"),
        ("none", r"record 2: pixel \(row 9, col 10\) is covered by 0 entity masks"),
    ],
)
def test_bad_masks_name_file_and_record(tmp_path: Path, kind, message):
    rng = np.random.default_rng(4)
    scenes = [random_scene(TETROMINOES, rng) for _ in range(2)] + [corrupt_scene(kind, rng)]
    write_py(tmp_path / TETROMINOES.file, TETROMINOES, scenes)
    source = Tetrominoes(tmp_path, splits={"train": [0, 3]})
    assert len(list(source.read("train", 0, 2))) == 2
    with pytest.raises(SourceError, match=r"tetrominoes_train\.tfrecords: " + message):
        list(source.read("train", 0, 3))


def test_crc_mismatch_and_truncated_gzip(tmp_path: Path):
    rng = np.random.default_rng(5)
    scenes = [random_scene(TETROMINOES, rng) for _ in range(3)]
    plain = tmp_path / "plain" / TETROMINOES.file
    plain.parent.mkdir()
    write_py(plain, TETROMINOES, scenes, compression=None)
    raw = bytearray(plain.read_bytes())
    size = len(raw) // 3
    raw[size + 500] ^= 0x10  # inside record 1's payload
    flipped = tmp_path / "flipped" / TETROMINOES.file
    flipped.parent.mkdir()
    flipped.write_bytes(gzip.compress(bytes(raw)))
    source = Tetrominoes(flipped.parent, splits={"train": [0, 3]})
    assert source.splits() == {"train": 3}  # counting checks only the framing
    with pytest.raises(SourceError, match=r"flipped/tetrominoes_train\.tfrecords: record 1: payload CRC mismatch"):
        list(source.read("train", 0, 3))
    assert len(list(source.read("train", 2, 3))) == 1  # record 1 is skipped, not read

    cut = tmp_path / "cut" / TETROMINOES.file
    cut.parent.mkdir()
    write_py(cut, TETROMINOES, scenes)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 3])
    with pytest.warns(UserWarning, match=r"cut/tetrominoes_train\.tfrecords: record 1: truncated compressed stream"):
        assert Tetrominoes(cut.parent).splits() == {"train": 2, "val": 0, "test": 0}  # 1 whole + the cut one
    cut_source = Tetrominoes(cut.parent, splits={"train": [0, 3]})
    with pytest.raises(SourceError, match=r"cut/tetrominoes_train\.tfrecords: record 1: truncated compressed stream"):
        with pytest.warns(UserWarning):
            list(cut_source.read("train", 0, 3))
    assert len(list(cut_source.read("train", 0, 1))) == 1


def test_damaged_files_convert_with_skip_bad(tmp_path: Path):
    """A cut download fails naming its last record, or with --skip-bad keeps every whole scene; a
    CRC mismatch spoils only its record, also when filtering by object count."""
    from objdisc.data.convert import convert

    rng = np.random.default_rng(7)
    scenes = [random_scene(TETROMINOES, rng, 2) for _ in range(8)]
    cut = tmp_path / "cut" / TETROMINOES.file
    cut.parent.mkdir()
    write_py(cut, TETROMINOES, scenes)
    full = cut.read_bytes()
    cut.write_bytes(full[: len(full) * 5 // 8])
    options = {"splits": {"train": [0, 8]}}
    with pytest.warns(UserWarning, match="cannot be read"):
        with pytest.raises(SourceError, match=r"record (\d): truncated compressed stream"):
            convert("tetrominoes", cut.parent, tmp_path / "strict", options=options, shard_scenes=2, progress=False)
    for extra in ({}, {"max_objects": 3}):
        with pytest.warns(UserWarning, match="cannot be read"):
            result = convert("tetrominoes", cut.parent, tmp_path / f"lenient{len(extra)}", options={**options, **extra},
                             shard_scenes=2, skip_bad=True, progress=False)
        [skip] = result.skipped
        assert "truncated compressed stream" in skip["error"]
        assert result.splits["train"]["scenes"] == skip["position"] >= 3  # every whole record before the cut

    plain = tmp_path / "plain" / TETROMINOES.file
    plain.parent.mkdir()
    write_py(plain, TETROMINOES, scenes, compression=None)
    raw = bytearray(plain.read_bytes())
    raw[len(raw) // 8 * 3 + 100] ^= 0x01  # inside record 3's payload (records have one size)
    plain.write_bytes(bytes(raw))
    for extra in ({}, {"max_objects": 3}):
        result = convert("tetrominoes", plain.parent, tmp_path / f"crc{len(extra)}", options={**options, **extra},
                         shard_scenes=2, skip_bad=True, progress=False)
        assert [(s["position"], "payload CRC mismatch" in s["error"]) for s in result.skipped] == [(3, True)]
        assert result.splits["train"]["scenes"] == 7


@pytest.mark.tf
def test_tensorflow_written_file_reads_with_tensorflow_blocked(tf, tmp_path: Path):
    rng = np.random.default_rng(6)
    layout = MULTI_DSPRITES["binarized"]
    scenes = [random_scene(layout, rng) for _ in range(3)]
    write_tf(tmp_path / layout.file, layout, scenes)
    np.savez(tmp_path / "expected.npz", ids=np.stack([s["ids"] for s in scenes]),
             image=np.stack([expected_image(s) for s in scenes]))
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
        import numpy as np
        from objdisc.data.sources.multi_object import MultiDSprites
        expected = np.load({str(tmp_path / "expected.npz")!r})
        source = MultiDSprites({str(tmp_path)!r}, splits={{"all": [0, None]}})
        scenes = list(source.read("all", 0, 3))
        assert len(scenes) == 3
        assert (np.stack([s["mask"][0] for s in scenes]) == expected["ids"]).all()
        assert (np.stack([s["image"][0] for s in scenes]) == expected["image"]).all()
        assert sys.modules["tensorflow"] is None
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
