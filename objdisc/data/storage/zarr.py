"""zarr v3 shards packed in one zip file: ``<split>-NNNNNN.zarr.zip``.

The group holds the same columns as the HDF5 shard (see ``hdf5.py``): ``key``, ``objects`` and
``meta`` as variable-length UTF-8 strings, the array fields with a leading scene axis chunked one
scene per chunk and compressed with Blosc (zstd, byte shuffle).

Why a zip: a zarr directory store writes one file per chunk, which DVC tracks badly, and a
shard is immutable once written, so one file per shard is the natural unit. zarr's own
``ZipStore`` is not used for writing because (a) it stamps the current time into every zip
entry, so equal data would give different bytes, and (b) zip entries cannot be rewritten, while
growing an array rewrites its metadata. So the writer lets zarr encode into an in-memory store
and moves each block's finished scene chunks into the zip as it goes (memory stays one block
deep); metadata and the small string columns follow at the end. Entries are stored (chunks are
compressed already) with a fixed 1980-01-01 time, in a fixed order, so equal input gives equal
bytes. Readers open the file with ``zarr.storage.ZipStore(mode="r")``.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from objdisc.data.schema import Scene
from objdisc.data.storage import (
    ROW_BLOCK,
    STRING_COLUMNS,
    StorageError,
    block_columns,
    check_layout_attrs,
    layout_attrs,
    row_scene,
    scene_blocks,
)

STRING_CHUNK = 256
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
# Chunk keys "c.12.0.0.0" instead of "c/12/0/0/0": flat names, so a shard unzipped into a folder
# is one file per chunk rather than a folder per chunk.
CHUNK_KEYS = {"name": "default", "separator": "."}


def _compressors() -> list[BloscCodec]:
    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]


def _create(group: zarr.Group, columns: dict[str, Any]) -> dict[str, zarr.Array]:
    arrays = {}
    with warnings.catch_warnings():
        # zarr warns that the variable-length string type is not yet in the v3 core spec.
        warnings.simplefilter("ignore", category=UserWarning)
        for name, column in columns.items():
            if name in STRING_COLUMNS:
                arrays[name] = group.create_array(
                    name, shape=(0,), chunks=(STRING_CHUNK,), dtype=str, chunk_key_encoding=CHUNK_KEYS
                )
            else:
                row = column.shape[1:]
                arrays[name] = group.create_array(
                    name,
                    shape=(0, *row),
                    chunks=(1, *row),
                    dtype=column.dtype,
                    compressors=_compressors(),
                    chunk_key_encoding=CHUNK_KEYS,
                )
    return arrays


def _add(zf: zipfile.ZipFile, key: str, data: bytes) -> None:
    """One zip entry with fixed time and permissions, stored (chunks are compressed already)."""
    info = zipfile.ZipInfo(key, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # unix, whatever the writing platform
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def _is_row_chunk(key: str) -> bool:
    """A chunk of a scene array: complete once written, since it holds exactly one scene."""
    name, _, rest = key.partition("/")
    return name not in STRING_COLUMNS and rest.startswith("c.")


def write(path: Path, scenes: Iterable[Scene], depth_dtype: str) -> tuple[list[str], list[int]]:
    """Write validated scenes of one layout into the zipped zarr group ``path``."""
    entries: dict[str, Any] = {}  # the in-memory store: key -> zarr Buffer
    group = zarr.open_group(zarr.storage.MemoryStore(entries), mode="w", zarr_format=3)
    keys: list[str] = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        arrays: dict[str, zarr.Array] = {}
        columns: dict[str, Any] = {}
        for block in scene_blocks(scenes):
            columns = block_columns(block, depth_dtype)
            if not arrays:
                arrays = _create(group, columns)
            start, stop = len(keys), len(keys) + len(block)
            for name, array in arrays.items():
                array.resize((stop, *array.shape[1:]))
                column = columns[name]
                array[start:stop] = np.array(column, dtype=object) if name in STRING_COLUMNS else column
            keys.extend(columns["key"])
            # Move the finished scene chunks to the zip now, so memory holds one block, not the
            # shard. Sorted, because zarr stores the chunks of a block in completion order.
            for key in sorted(k for k in entries if _is_row_chunk(k)):
                _add(zf, key, entries.pop(key).to_bytes())
        group.attrs.update(layout_attrs(columns, depth_dtype, len(keys)))
        for key in sorted(entries):  # metadata and the string columns, in their final state
            _add(zf, key, entries[key].to_bytes())
    return keys, list(range(len(keys)))


class _Shard:
    """An open zipped zarr shard: its columns and scene count; closes the zip on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store: zarr.storage.ZipStore | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def _open(self) -> None:
        path = self.path
        try:
            if not zipfile.is_zipfile(path):
                raise StorageError(f"{path}: not a zip file")
            self.store = zarr.storage.ZipStore(path, mode="r")
            group = zarr.open_group(self.store, mode="r", zarr_format=3)
            fields = check_layout_attrs(group.attrs, path)
        except StorageError:
            raise
        except Exception as err:  # zipfile, zarr and json raise many types on bad bytes
            raise StorageError(f"{path}: not a readable zarr shard: {err}") from None
        self.arrays = {}
        for name in (*STRING_COLUMNS, *fields):
            try:
                self.arrays[name] = group[name]
            except KeyError:
                raise StorageError(f"{path}: array '{name}' is missing") from None
        self.count = self.arrays["key"].shape[0]
        for name, array in self.arrays.items():
            if array.shape[0] != self.count:
                raise StorageError(
                    f"{path}: array '{name}' has {array.shape[0]} rows, 'key' has {self.count}"
                )

    def __enter__(self) -> _Shard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, start: int, stop: int) -> dict[str, Any]:
        block = {}
        for name, array in self.arrays.items():
            try:
                block[name] = array[start:stop]
            except Exception as err:
                raise StorageError(f"{self.path}: array '{name}' rows {start}..{stop - 1}: {err}") from None
        return block


def iter_shard(path: Path) -> Iterator[tuple[int, Scene]]:
    with _Shard(path) as shard:
        for start in range(0, shard.count, ROW_BLOCK):
            stop = min(start + ROW_BLOCK, shard.count)
            block = shard.read(start, stop)
            for i in range(stop - start):
                yield start + i, row_scene({n: c[i] for n, c in block.items()}, path, start + i)


def read_at(path: Path, offset: int) -> Scene:
    with _Shard(path) as shard:
        if not 0 <= offset < shard.count:
            raise StorageError(f"{path}: row {offset} out of range (shard has {shard.count} scenes)")
        block = shard.read(offset, offset + 1)
        return row_scene({n: c[0] for n, c in block.items()}, path, offset)
