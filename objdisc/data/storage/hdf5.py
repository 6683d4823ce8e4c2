"""HDF5 shards (h5py): one dataset per field with a leading scene axis.

Layout of ``<split>-NNNNNN.h5``::

    /key         (N,)          variable-length UTF-8, the scene's __key__
    /image       (N,V,H,W,3)   uint8     chunks (1,V,H,W,3)
    /mask        (N,V,H,W)     uint8     (optional)
    /depth       (N,V,H,W)     float32 or float16 (optional)
    /cam2world   (N,V,4,4)     float32   (optional, with intrinsics)
    /intrinsics  (N,V,3,3)     float32
    /objects     (N,)          variable-length UTF-8 JSON
    /meta        (N,)          variable-length UTF-8 JSON
    attrs: layout, version, fields, depth_dtype, scenes

Arrays are chunked one scene per chunk (random access reads one chunk per field) and compressed
with gzip level 4 plus byte shuffle, the portable choice that any HDF5 reader can open. h5py
does not stamp creation times into datasets by default, so equal input gives equal bytes.
Handles cannot be pickled: loaders must open shards inside each worker (``read_shard`` and
``read_scene`` open and close the file themselves).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

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

GZIP_LEVEL = 4
STRING_CHUNK = 256  # key/objects/meta are small: many scenes per chunk
_STR = h5py.string_dtype("utf-8")


def _create(f: h5py.File, columns: dict[str, Any]) -> dict[str, h5py.Dataset]:
    datasets = {}
    for name, column in columns.items():
        if name in STRING_COLUMNS:
            datasets[name] = f.create_dataset(
                name, shape=(0,), maxshape=(None,), chunks=(STRING_CHUNK,), dtype=_STR
            )
        else:
            row = column.shape[1:]
            datasets[name] = f.create_dataset(
                name,
                shape=(0, *row),
                maxshape=(None, *row),
                chunks=(1, *row),
                dtype=column.dtype,
                compression="gzip",
                compression_opts=GZIP_LEVEL,
                shuffle=True,
            )
    return datasets


def write(path: Path, scenes: Iterable[Scene], depth_dtype: str) -> tuple[list[str], list[int]]:
    """Write validated scenes of one layout into the HDF5 file ``path``; return keys and rows."""
    keys: list[str] = []
    with h5py.File(path, "w") as f:
        datasets: dict[str, h5py.Dataset] = {}
        columns: dict[str, Any] = {}
        for block in scene_blocks(scenes):
            columns = block_columns(block, depth_dtype)
            if not datasets:
                datasets = _create(f, columns)
            start, stop = len(keys), len(keys) + len(block)
            for name, dataset in datasets.items():
                dataset.resize(stop, axis=0)
                column = columns[name]
                dataset[start:stop] = np.array(column, dtype=_STR) if name in STRING_COLUMNS else column
            keys.extend(columns["key"])
        f.attrs.update(layout_attrs(columns, depth_dtype, len(keys)))
    return keys, list(range(len(keys)))


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise StorageError(f"{path}: not a readable HDF5 shard: {err}") from None


def _datasets(f: h5py.File, path: Path) -> tuple[dict[str, h5py.Dataset], int]:
    fields = check_layout_attrs(f.attrs, path)
    datasets = {}
    for name in (*STRING_COLUMNS, *fields):
        if name not in f:
            raise StorageError(f"{path}: dataset '/{name}' is missing")
        datasets[name] = f[name]
    count = len(datasets["key"])
    for name, dataset in datasets.items():
        if len(dataset) != count:
            raise StorageError(f"{path}: dataset '/{name}' has {len(dataset)} rows, '/key' has {count}")
    return datasets, count


def _read(datasets: dict[str, h5py.Dataset], start: int, stop: int, path: Path) -> dict[str, Any]:
    block = {}
    for name, dataset in datasets.items():
        try:
            if name in STRING_COLUMNS:
                block[name] = dataset.asstr()[start:stop]
            else:
                block[name] = dataset[start:stop]
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise StorageError(f"{path}: dataset '/{name}' rows {start}..{stop - 1}: {err}") from None
    return block


def iter_shard(path: Path) -> Iterator[tuple[int, Scene]]:
    with _open(path) as f:
        datasets, count = _datasets(f, path)
        for start in range(0, count, ROW_BLOCK):
            stop = min(start + ROW_BLOCK, count)
            block = _read(datasets, start, stop, path)
            for i in range(stop - start):
                yield start + i, row_scene({n: c[i] for n, c in block.items()}, path, start + i)


def read_at(path: Path, offset: int) -> Scene:
    with _open(path) as f:
        datasets, count = _datasets(f, path)
        if not 0 <= offset < count:
            raise StorageError(f"{path}: row {offset} out of range (shard has {count} scenes)")
        block = _read(datasets, offset, offset + 1, path)
        return row_scene({n: c[0] for n, c in block.items()}, path, offset)
