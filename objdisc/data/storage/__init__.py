"""Write and read canonical scenes as shards in three formats.

Every format is sharded: a split is stored as ``<split>-NNNNNN.<suffix>`` files, so conversion
can run in parallel and resume shard by shard. The formats hold the same fields:

* ``webdataset`` (``.tar``): one tar member per field and view (PNG images and masks, ``.npy``
  depth and cameras, JSON objects and meta), byte-for-byte reproducible.
* ``hdf5`` (``.h5``): one dataset per field with a leading scene axis, one scene per chunk.
* ``zarr`` (``.zarr.zip``): the same arrays as zarr v3 packed into a single zip file, so that a
  shard is one file (DVC tracks many small files badly).

A shard is written atomically (``objdisc.io.atomic_path``: ``<name>.tmp-<pid>``, flushed to disk,
then renamed), so a crash never leaves a complete-looking partial shard and ``list_shards``
ignores the leftovers.
Offsets locate one scene inside a shard without a scan: the byte offset of the scene's first
tar header, or the row index in HDF5 and zarr.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from objdisc.io import atomic_path
from objdisc.data.schema import ARRAY_FIELDS, SchemaError, Scene, validate_scene

FORMATS = ("webdataset", "hdf5", "zarr")
SUFFIXES = {"webdataset": ".tar", "hdf5": ".h5", "zarr": ".zarr.zip"}
DEPTH_DTYPES = ("float32", "float16")

# <split>-NNNNNN<suffix>; the split may itself contain dashes ("val-hard-000002.tar").
_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{6,})(?P<suffix>\.tar|\.h5|\.zarr\.zip)$")


class StorageError(ValueError):
    """A shard cannot be written or read; the message names the shard (and member or scene)."""


@dataclass
class ShardInfo:
    """What ``write_shard`` wrote: the index records it per shard."""

    path: str  # file name only, relative to the dataset folder
    scenes: int
    bytes: int
    sha256: str
    keys: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # tar: header byte offset; h5/zarr: row

    def entry(self) -> dict[str, Any]:
        """The shard's line in ``index.json``."""
        return {"path": self.path, "scenes": self.scenes, "bytes": self.bytes, "sha256": self.sha256}


def shard_suffix(fmt: str) -> str:
    try:
        return SUFFIXES[fmt]
    except KeyError:
        raise StorageError(f"unknown storage format '{fmt}' (known: {', '.join(FORMATS)})") from None


def shard_name(split: str, index: int, fmt: str) -> str:
    """``shard_name("train", 3, "webdataset") == "train-000003.tar"``."""
    if not split or "/" in split or "." in split:
        raise StorageError(f"bad split name '{split}': it must be non-empty, without '/' or '.'")
    if index < 0:
        raise StorageError(f"shard index must be >= 0, got {index}")
    return f"{split}-{int(index):06d}{shard_suffix(fmt)}"


def parse_shard_name(name: str) -> tuple[str, int, str] | None:
    """``"train-000003.tar"`` → ``("train", 3, "webdataset")``; None for other file names."""
    match = _SHARD_RE.match(name)
    if match is None:
        return None
    fmt = next(f for f, s in SUFFIXES.items() if s == match["suffix"])
    return match["split"], int(match["index"]), fmt


def format_of(path: str | Path) -> str:
    """The storage format of a shard, from its suffix."""
    name = Path(path).name
    for fmt, suffix in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    known = ", ".join(f"{s} ({f})" for f, s in SUFFIXES.items())
    raise StorageError(f"{path}: unknown shard suffix (known: {known})")


def list_shards(dataset_dir: Path, split: str) -> list[Path]:
    """The shards of ``split`` in ``dataset_dir``, in shard order; temporary files are ignored."""
    found = []
    for path in Path(dataset_dir).glob(f"{glob_escape(split)}-*"):
        parsed = parse_shard_name(path.name)
        if parsed is not None and parsed[0] == split and path.is_file():
            found.append((parsed[1], path.name, path))
    return [path for _, _, path in sorted(found)]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _format_module(fmt: str) -> ModuleType:
    # Imported on demand: the format modules import StorageError from here.
    if fmt == "webdataset":
        from objdisc.data.storage import webdataset as module
    elif fmt == "hdf5":
        from objdisc.data.storage import hdf5 as module
    elif fmt == "zarr":
        from objdisc.data.storage import zarr as module
    else:
        shard_suffix(fmt)  # raises the unknown-format error
    return module


def _layout(scene: Scene) -> dict[str, tuple[int, ...]]:
    return {name: scene[name].shape for name in ARRAY_FIELDS if name in scene}


def _checked(scenes: Iterable[Scene], shard: str, depth_dtype: str) -> Iterator[Scene]:
    """Validate the scenes on their way into a shard: schema, unique keys, one layout per shard.

    HDF5 and zarr need one array shape per field for the whole shard; the tar format could hold
    mixed shapes, but the index records one schema per dataset, so every format enforces it.
    """
    first: tuple[str, dict[str, tuple[int, ...]]] | None = None
    seen: set[str] = set()
    for i, scene in enumerate(scenes):
        key = scene.get("__key__", f"#{i}") if isinstance(scene, dict) else f"#{i}"
        where = f"{shard}: scene '{key}'"
        if not isinstance(scene, dict):
            raise StorageError(f"{where}: a scene must be a dict, got {type(scene).__name__}")
        validate_scene(scene, where)
        if key in seen:
            raise StorageError(f"{where}: duplicate __key__ in the shard")
        seen.add(key)
        layout = _layout(scene)
        if first is None:
            first = (key, layout)
        else:
            key0, layout0 = first
            for name in ARRAY_FIELDS:
                if name in layout0 and name not in layout:
                    raise StorageError(f"{where}: field '{name}' is missing but scene '{key0}' has it")
                if name in layout and name not in layout0:
                    raise StorageError(f"{where}: field '{name}' is present but scene '{key0}' lacks it")
                if name in layout and layout[name] != layout0[name]:
                    raise StorageError(
                        f"{where}: field '{name}' has shape {layout[name]}, but the shard's "
                        f"first scene '{key0}' has {layout0[name]}"
                    )
        if depth_dtype == "float16" and "depth" in scene:
            depth = scene["depth"]
            with np.errstate(over="ignore"):
                overflow = np.isfinite(depth) & ~np.isfinite(depth.astype(np.float16))
            if overflow.any():
                raise StorageError(f"{where}: depth exceeds the float16 range; store it as float32")
        yield scene
    if first is None:
        raise StorageError(f"{shard}: no scenes to write")


# --- the columnar layout shared by HDF5 and zarr ------------------------------------------------
# One array per field with a leading scene axis, one scene per chunk; __key__, objects and meta
# as variable-length UTF-8 strings (objects and meta as JSON). The key column is called "key":
# zarr v3 reserves node names that start with "__".

LAYOUT_NAME = "objdisc-scene-shard"
LAYOUT_VERSION = 1
STRING_COLUMNS = ("key", "objects", "meta")
ROW_BLOCK = 16  # scenes stacked per write and per read: fewer, larger library calls


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def scene_blocks(scenes: Iterable[Scene], size: int = ROW_BLOCK) -> Iterator[list[Scene]]:
    block: list[Scene] = []
    for scene in scenes:
        block.append(scene)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def block_columns(block: list[Scene], depth_dtype: str) -> dict[str, Any]:
    """Stack a block of scenes with one layout into columns: arrays and lists of str."""
    columns: dict[str, Any] = {
        "key": [s["__key__"] for s in block],
        "objects": [_json_text(s["objects"]) for s in block],
        "meta": [_json_text(s["meta"]) for s in block],
    }
    for name in ARRAY_FIELDS:
        if name in block[0]:
            dtype = depth_dtype if name == "depth" else block[0][name].dtype
            columns[name] = np.stack([s[name] for s in block]).astype(dtype, copy=False)
    return columns


def layout_attrs(columns: dict[str, Any], depth_dtype: str, scenes: int) -> dict[str, Any]:
    fields = [name for name in ARRAY_FIELDS if name in columns]
    return {
        "layout": LAYOUT_NAME,
        "version": LAYOUT_VERSION,
        "fields": fields,
        "depth_dtype": depth_dtype,
        "scenes": scenes,
    }


def check_layout_attrs(attrs: Any, path: Path) -> list[str]:
    """The array fields a shard holds, after checking that it is one of ours."""
    if attrs.get("layout") != LAYOUT_NAME:
        raise StorageError(f"{path}: not an objdisc scene shard (attribute layout={attrs.get('layout')!r})")
    if int(attrs.get("version", -1)) != LAYOUT_VERSION:
        raise StorageError(
            f"{path}: layout version {attrs.get('version')} (this code reads {LAYOUT_VERSION})"
        )
    fields = [str(name) for name in attrs.get("fields", [])]
    unknown = set(fields) - set(ARRAY_FIELDS)
    if unknown:
        raise StorageError(f"{path}: unknown fields {sorted(unknown)}")
    return fields


def row_scene(row: dict[str, Any], path: Path, index: int) -> Scene:
    """One row of the columns back into a canonical scene (arrays copied: writable, own memory)."""
    scene: Scene = {"__key__": str(row["key"])}
    for name in ARRAY_FIELDS:
        if name in row:
            scene[name] = np.array(row[name], dtype=np.float32 if name == "depth" else None)
    for name in ("objects", "meta"):
        try:
            scene[name] = json.loads(str(row[name]))
        except json.JSONDecodeError as err:
            where = f"{path}: row {index} ('{scene['__key__']}')"
            raise StorageError(f"{where}: bad {name} JSON: {err}") from None
    return scene


def write_shard(
    path: Path, scenes: Iterable[Scene], fmt: str | None = None, *, depth_dtype: str = "float32"
) -> ShardInfo:
    """Write ``scenes`` into the shard ``path`` atomically and describe what was written.

    ``depth_dtype="float16"`` halves the depth storage (the design allows it); the default keeps
    float32 so that a round trip is exact. Reading always returns float32 depth.
    """
    path = Path(path)
    fmt = fmt or format_of(path)
    if format_of(path) != fmt:
        raise StorageError(f"{path}: the suffix does not match format '{fmt}' ({shard_suffix(fmt)})")
    if depth_dtype not in DEPTH_DTYPES:
        raise StorageError(f"{path}: depth_dtype must be one of {DEPTH_DTYPES}, got '{depth_dtype}'")
    module = _format_module(fmt)
    with atomic_path(path, durable=True) as tmp:
        keys, offsets = module.write(tmp, _checked(scenes, path.name, depth_dtype), depth_dtype)
    return ShardInfo(
        path=path.name,
        scenes=len(keys),
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
        keys=keys,
        offsets=offsets,
    )


def _validated(scene: Scene, path: Path) -> Scene:
    try:
        return validate_scene(scene, f"{path}: scene '{scene.get('__key__')}'")
    except SchemaError as err:
        raise StorageError(str(err)) from None


def iter_shard(path: Path) -> Iterator[tuple[int, Scene]]:
    """Yield ``(offset, scene)`` for every scene of a shard, in order (the index uses offsets)."""
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: shard not found")
    module = _format_module(format_of(path))
    for offset, scene in module.iter_shard(path):
        yield offset, _validated(scene, path)


def read_shard(path: Path) -> Iterator[Scene]:
    """Yield the canonical scenes of a shard (writable arrays with the schema's dtypes)."""
    for _, scene in iter_shard(path):
        yield scene


def read_scene(path: Path, offset: int) -> Scene:
    """Read the one scene at ``offset`` (from ``ShardInfo.offsets`` or the index key table)."""
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: shard not found")
    module = _format_module(format_of(path))
    return _validated(module.read_at(path, int(offset)), path)


def decode_wds_sample(sample: dict[str, Any]) -> Scene:
    """Turn a raw WebDataset sample (member suffix → bytes) into a canonical scene."""
    from objdisc.data.storage.webdataset import decode_sample

    return decode_sample(sample)


__all__ = [
    "DEPTH_DTYPES",
    "ROW_BLOCK",
    "FORMATS",
    "ShardInfo",
    "StorageError",
    "decode_wds_sample",
    "format_of",
    "iter_shard",
    "list_shards",
    "parse_shard_name",
    "read_scene",
    "read_shard",
    "sha256_file",
    "shard_name",
    "shard_suffix",
    "write_shard",
]
