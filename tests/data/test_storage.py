"""Shards in all three formats: exact round trips, reproducible bytes, atomic writes, random
access by offset, the WebDataset pipeline, and clear errors on corrupt or inconsistent input."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from objdisc.data.schema import SchemaError, Scene, scene_key
from objdisc.data.storage import (
    FORMATS,
    StorageError,
    decode_wds_sample,
    format_of,
    iter_shard,
    list_shards,
    parse_shard_name,
    read_scene,
    read_shard,
    sha256_file,
    shard_name,
    shard_suffix,
    write_shard,
)


def make_scene(rng: np.random.Generator, index: int, kind: str, size: int = 8) -> Scene:
    """A random scene: "3d" (3 views, every field), "2d" (1 view, mask), "2d_plain" (image only)."""
    views = 3 if kind == "3d" else 1
    scene: Scene = {
        "__key__": scene_key(index),
        "image": rng.integers(0, 256, (views, size, size, 3), dtype=np.uint8),
        "objects": [{"shape": "cube", "colour": "grün", "position": [float(rng.normal()), 0.5, -1e-7]}],
        "meta": {"source": "test", "index": index, "split": "train", "views": list(range(views))},
    }
    if kind != "2d_plain":
        scene["mask"] = rng.integers(0, 11, (views, size, size), dtype=np.uint8)
    if kind == "3d":
        scene["depth"] = rng.uniform(0.1, 40.0, (views, size, size)).astype(np.float32)
        scene["depth"][0, 0, 0] = np.inf  # background rays that hit nothing
        scene["cam2world"] = rng.normal(size=(views, 4, 4)).astype(np.float32)
        scene["intrinsics"] = rng.normal(size=(views, 3, 3)).astype(np.float32)
    return scene


def make_scenes(n: int, kind: str = "3d", seed: int = 0, size: int = 8) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [make_scene(rng, i, kind, size) for i in range(n)]


def assert_same_scene(got: Scene, want: Scene) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        if isinstance(value, np.ndarray):
            assert got[name].dtype == value.dtype, name
            assert got[name].shape == value.shape, name
            np.testing.assert_array_equal(got[name], value, err_msg=name)
            assert got[name].flags.writeable, name
        else:
            assert got[name] == value, name


def path_for(tmp_path: Path, fmt: str, split: str = "train", index: int = 0) -> Path:
    return tmp_path / shard_name(split, index, fmt)


# --- names ------------------------------------------------------------------------------------


def test_names_and_suffixes() -> None:
    assert shard_name("train", 3, "webdataset") == "train-000003.tar"
    assert shard_name("val", 12, "hdf5") == "val-000012.h5"
    assert shard_name("test", 0, "zarr") == "test-000000.zarr.zip"
    assert [shard_suffix(f) for f in FORMATS] == [".tar", ".h5", ".zarr.zip"]
    assert format_of("a/train-000001.zarr.zip") == "zarr"
    assert format_of(Path("train-000001.h5")) == "hdf5"
    assert parse_shard_name("val-hard-000002.tar") == ("val-hard", 2, "webdataset")
    assert parse_shard_name("train-000002.tar.tmp-17") is None
    with pytest.raises(StorageError, match="unknown storage format 'lmdb'"):
        shard_suffix("lmdb")
    with pytest.raises(StorageError, match="x.npz"):
        format_of("x.npz")
    with pytest.raises(StorageError, match="does not match"):
        write_shard(Path("train-000000.tar"), [], "hdf5")


def test_list_shards_sorted_and_ignores_temporary_files(tmp_path: Path) -> None:
    names = [
        "train-000010.tar",
        "train-000002.h5",
        "train-000001.zarr.zip",
        "train-000003.tar.tmp-123",  # an interrupted write
        "train-hard-000000.tar",  # another split
        "val-000000.tar",
        "train.txt",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_shards(tmp_path, "train")] == [
        "train-000001.zarr.zip",
        "train-000002.h5",
        "train-000010.tar",
    ]
    assert [p.name for p in list_shards(tmp_path, "train-hard")] == ["train-hard-000000.tar"]
    assert list_shards(tmp_path, "test") == []


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["3d", "2d", "2d_plain"])
def test_exact_round_trip(tmp_path: Path, fmt: str, kind: str) -> None:
    scenes = make_scenes(21, kind)  # more than one read/write block of 16
    path = path_for(tmp_path, fmt)
    info = write_shard(path, scenes)
    assert (info.path, info.scenes) == (path.name, 21)
    assert info.keys == [s["__key__"] for s in scenes]
    assert info.bytes == path.stat().st_size
    assert info.sha256 == sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    got = list(read_shard(path))
    assert len(got) == len(scenes)
    for g, s in zip(got, scenes):
        assert_same_scene(g, s)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary leftovers


@pytest.mark.parametrize("fmt", FORMATS)
def test_float16_depth_is_smaller_and_read_as_float32(tmp_path: Path, fmt: str) -> None:
    scenes = make_scenes(3, size=32)  # depth beyond the 512-byte padding of tar members
    full = write_shard(path_for(tmp_path, fmt, index=0), scenes)
    half = write_shard(path_for(tmp_path, fmt, index=1), scenes, depth_dtype="float16")
    assert half.bytes < full.bytes
    for got, want in zip(read_shard(path_for(tmp_path, fmt, index=1)), scenes):
        assert got["depth"].dtype == np.float32
        np.testing.assert_array_equal(got["depth"], want["depth"].astype(np.float16).astype(np.float32))
    scenes[1]["depth"][0, 1, 1] = 1e6  # beyond float16
    with pytest.raises(StorageError, match="scene '00000001'.*float16"):
        write_shard(path_for(tmp_path, fmt, index=2), scenes, depth_dtype="float16")


def test_tar_members_and_headers(tmp_path: Path) -> None:
    path = path_for(tmp_path, "webdataset")
    write_shard(path, make_scenes(2, "3d"))
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:13]] == [
        "00000000.image_00.png",
        "00000000.image_01.png",
        "00000000.image_02.png",
        "00000000.mask_00.png",
        "00000000.mask_01.png",
        "00000000.mask_02.png",
        "00000000.depth_00.npy",
        "00000000.depth_01.npy",
        "00000000.depth_02.npy",
        "00000000.cam2world.npy",
        "00000000.intrinsics.npy",
        "00000000.objects.json",
        "00000000.meta.json",
    ]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o444)}
    with tarfile.open(path) as tar:
        mask = tar.extractfile("00000000.mask_01.png").read()
        depth = tar.extractfile("00000000.depth_00.npy").read()
    from PIL import Image

    assert Image.open(io.BytesIO(mask)).mode == "L"
    assert np.load(io.BytesIO(depth)).dtype == np.float32


def test_shards_are_byte_for_byte_reproducible(tmp_path: Path) -> None:
    scenes = make_scenes(5)
    first = {fmt: write_shard(path_for(tmp_path / "a", fmt), scenes).sha256 for fmt in FORMATS}
    time.sleep(1.1)  # any timestamp with one-second resolution would now differ
    second = {fmt: write_shard(path_for(tmp_path / "b", fmt), scenes).sha256 for fmt in FORMATS}
    assert first == second
    other = write_shard(path_for(tmp_path / "c", "webdataset"), make_scenes(5, seed=1)).sha256
    assert other != first["webdataset"]


# --- atomicity and validation on write --------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_write_leaves_nothing_behind(tmp_path: Path, fmt: str) -> None:
    scenes = make_scenes(20)

    def crashing():
        yield from scenes[:18]  # past the first block of 16
        raise RuntimeError("source broke")

    path = path_for(tmp_path, fmt)
    with pytest.raises(RuntimeError, match="source broke"):
        write_shard(path, crashing())
    assert list(tmp_path.iterdir()) == []

    # A failed rewrite keeps the old shard untouched.
    old = write_shard(path, scenes[:2])
    with pytest.raises(RuntimeError):
        write_shard(path, crashing())
    assert sha256_file(path) == old.sha256
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("fmt", FORMATS)
def test_invalid_scene_error_names_the_key(tmp_path: Path, fmt: str) -> None:
    scenes = make_scenes(3)
    scenes[2]["image"] = scenes[2]["image"].astype(np.float32)
    with pytest.raises(SchemaError, match="train-000000.* scene '00000002'.*image has dtype float32"):
        write_shard(path_for(tmp_path, fmt), scenes)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_layout_mismatch_names_field_and_scene(tmp_path: Path, fmt: str) -> None:
    scenes = make_scenes(2, "2d") + [make_scene(np.random.default_rng(1), 2, "2d", size=9)]
    expected = r"scene '00000002': field 'image' has shape \(1, 9, 9, 3\).*'00000000'"
    with pytest.raises(StorageError, match=expected):
        write_shard(path_for(tmp_path, fmt), scenes)
    scenes = make_scenes(2, "2d")
    del scenes[1]["mask"]
    with pytest.raises(StorageError, match="scene '00000001': field 'mask' is missing"):
        write_shard(path_for(tmp_path, fmt), scenes)
    scenes = make_scenes(2, "2d")
    scenes[1]["__key__"] = scenes[0]["__key__"]
    with pytest.raises(StorageError, match="duplicate __key__"):
        write_shard(path_for(tmp_path, fmt), scenes)
    with pytest.raises(StorageError, match="no scenes"):
        write_shard(path_for(tmp_path, fmt), [])
    assert list(tmp_path.iterdir()) == []


def test_webdataset_key_without_dots(tmp_path: Path) -> None:
    scenes = make_scenes(1)
    scenes[0]["__key__"] = "scene.1"
    with pytest.raises(StorageError, match="scene 'scene.1'.*'.'"):
        write_shard(path_for(tmp_path, "webdataset"), scenes)


# --- random access ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_scene_by_offset(tmp_path: Path, fmt: str) -> None:
    scenes = make_scenes(19)
    path = path_for(tmp_path, fmt)
    info = write_shard(path, scenes)
    assert info.offsets == sorted(set(info.offsets))
    if fmt == "webdataset":
        assert info.offsets[0] == 0 and all(o % 512 == 0 for o in info.offsets)
    else:
        assert info.offsets == list(range(19))
    assert [o for o, _ in iter_shard(path)] == info.offsets
    for i in (18, 0, 7):
        assert_same_scene(read_scene(path, info.offsets[i]), scenes[i])
    bad = info.offsets[1] + 512 if fmt == "webdataset" else 19
    with pytest.raises(StorageError, match=path.name):
        read_scene(path, bad)


# --- WebDataset pipeline ----------------------------------------------------------------------


def test_decode_wds_sample_in_a_webdataset_pipeline(tmp_path: Path) -> None:
    webdataset = pytest.importorskip("webdataset")
    scenes = make_scenes(4, "3d")
    path = path_for(tmp_path, "webdataset")
    write_shard(path, scenes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        dataset = webdataset.WebDataset([str(path)], shardshuffle=False).map(decode_wds_sample)
        got = list(dataset)
    assert len(got) == 4
    for g, s in zip(got, scenes):
        assert_same_scene(g, s)


def test_decode_wds_sample_errors() -> None:
    with pytest.raises(StorageError, match="member '00000001.image_00.png'.*raw bytes"):
        decode_wds_sample({"__key__": "00000001", "image_00.png": np.zeros((2, 2, 3))})
    with pytest.raises(StorageError, match="'00000001.colour.txt'.*not a field"):
        decode_wds_sample({"__key__": "00000001", "colour.txt": b"red"})
    with pytest.raises(StorageError, match="member '00000001.image_00.png'.*PNG"):
        decode_wds_sample({"__key__": "00000001", "image_00.png": b"not a png"})


# --- corrupt shards ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_garbage_shard(tmp_path: Path, fmt: str) -> None:
    path = path_for(tmp_path, fmt)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(StorageError, match=path.name):
        list(read_shard(path))
    with pytest.raises(StorageError, match=path.name):
        read_scene(path, 0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_shard(tmp_path: Path, fmt: str) -> None:
    path = path_for(tmp_path, fmt)
    write_shard(path, make_scenes(6))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(StorageError, match=path.name):
        list(read_shard(path))


def test_tar_cut_at_a_scene_boundary_is_detected(tmp_path: Path) -> None:
    # tarfile itself stops silently when a file ends exactly between members.
    path = path_for(tmp_path, "webdataset")
    info = write_shard(path, make_scenes(4))
    data = path.read_bytes()
    path.write_bytes(data[: info.offsets[2]])
    with pytest.raises(StorageError, match=f"{path.name}: truncated"):
        list(read_shard(path))


def test_tar_damaged_member_names_it(tmp_path: Path) -> None:
    path = path_for(tmp_path, "webdataset")
    write_shard(path, make_scenes(2))
    with tarfile.open(path) as tar:
        member = tar.getmember("00000001.mask_02.png")
    data = bytearray(path.read_bytes())
    data[member.offset_data : member.offset_data + 8] = b"garbage!"
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=r"train-000000.tar.*'00000001.mask_02.png'"):
        list(read_shard(path))


def test_hdf5_missing_dataset_is_named(tmp_path: Path) -> None:
    path = path_for(tmp_path, "hdf5")
    write_shard(path, make_scenes(2))
    with h5py.File(path, "a") as f:
        del f["meta"]
    with pytest.raises(StorageError, match="dataset '/meta' is missing"):
        list(read_shard(path))


def test_zarr_shard_is_one_reproducible_zip(tmp_path: Path) -> None:
    path = path_for(tmp_path, "zarr")
    write_shard(path, make_scenes(3))
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert "zarr.json" in names and "image/zarr.json" in names and "key/zarr.json" in names
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert sum(n.startswith("image/c.") for n in names) == 3  # one chunk per scene


def test_missing_shard(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="train-000000.h5: shard not found"):
        list(read_shard(tmp_path / "train-000000.h5"))
    assert not os.path.exists(tmp_path / "train-000000.h5")
