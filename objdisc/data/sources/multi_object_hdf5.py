"""CLEVR with masks and Tetrominoes as object-discovery-pytorch (HHousen) exports them to HDF5.

One HDF5 dataset per TFRecord feature with a leading record axis and the reader's shapes:
``clevr_with_masks.h5`` (image [N,240,320,3], mask [N,11,240,320,1] 0/255, x/y/z/rotation/
visibility [N,11], pixel_coords [N,11,3], size/material/shape/color [N,11] uint8) and
``tetrominoes.h5`` (image [N,35,35,3], mask [N,4,35,35,1], x/y/shape/visibility [N,4],
color [N,4,3]). Scenes are built by the same code as the TFRecord sources, so a record gives the
same image, mask ids and objects by either route.

Splits are HHousen's record ranges: CLEVR train [0, 70000), val [70001, 85000), test
[85001, 100000); Tetrominoes train [0, 60000), val [60001, 75000), test [75001, 90000) (the
records between are unused, as there), capped at the file's length; option ``splits`` replaces
the table (record numbers or fractions, ``objdisc.data.sources.options``; a range past the end of
the file is an error). Option ``max_objects`` keeps
scenes with at most that many visible objects (visibility of entities 1..E−1). HHousen instead
keeps Σ visibility ≤ num_slots − 1, background included, which admits one object fewer than the
slot count suggests; ``max_objects: 6`` is the true CLEVR6. Records are read in slices of at
most ~32 MiB, never the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from objdisc.data.schema import Scene
from objdisc.data.sources.base import Source, SourceError, SourceInfo
from objdisc.data.sources.multi_object import CLEVR, TETROMINOES, Layout, count_objects, scene_from_arrays
from objdisc.data.sources.options import SplitRange, check_options, parse_max_objects, parse_splits

NAME = "multi-object-hdf5"
DATASETS: dict[str, tuple[Layout, str, dict[str, SplitRange]]] = {
    "clevr": (
        CLEVR,
        "clevr_with_masks.h5",
        {"train": SplitRange(0, 70_000), "val": SplitRange(70_001, 85_000), "test": SplitRange(85_001, 100_000)},
    ),
    "tetrominoes": (
        TETROMINOES,
        "tetrominoes.h5",
        {"train": SplitRange(0, 60_000), "val": SplitRange(60_001, 75_000), "test": SplitRange(75_001, 90_000)},
    ),
}
BLOCK_BYTES = 32 << 20

_OBJECT_COUNTS: dict[tuple, np.ndarray] = {}


class MultiObjectHDF5(Source):
    """Option ``dataset``: clevr or tetrominoes; detected from the file name when not given."""

    info = SourceInfo(
        name=NAME,
        summary="HHousen HDF5 exports of CLEVR with masks / Tetrominoes (clevr_with_masks.h5, tetrominoes.h5), "
        "HHousen split ranges, max_objects filter",
        layout="data/raw/multi-object-hdf5/clevr_with_masks.h5 or tetrominoes.h5",
        origin="made from the DeepMind multi_object_datasets TFRecords (gs://multi-object-datasets) by "
        "HHousen/object-discovery-pytorch's conversion script",
    )

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        check_options(options, {"dataset", "splits", "max_objects"}, NAME)
        self.dataset = self._choose_dataset(options.get("dataset"))
        self.layout, file_name, table = DATASETS[self.dataset]
        self.path = self.root if self.root.is_file() else self.root / file_name
        if not self.path.is_file():
            raise SourceError(f"{NAME}: missing {self.path}")
        self.max_objects = parse_max_objects(options.get("max_objects"), NAME)
        self.table = parse_splits(options["splits"], NAME) if "splits" in options else dict(table)
        self.spec = self.layout.features()
        self.total = self._check_file()
        self._visible: np.ndarray | None = None  # kept on the instance: pickled workers never recount

    def _choose_dataset(self, dataset: Any) -> str:
        if dataset is not None:
            if dataset not in DATASETS:
                raise SourceError(f"{NAME}: unknown dataset '{dataset}' (known: {', '.join(DATASETS)})")
            return str(dataset)
        if self.root.is_file():
            name = self.root.name.lower()
            matches = [d for d in DATASETS if name.startswith(d)]
        else:
            matches = [d for d, (_, file_name, _) in DATASETS.items() if (self.root / file_name).is_file()]
        if len(matches) != 1:
            raise SourceError(
                f"{NAME}: cannot tell the dataset of {self.root} (found {matches or 'none'}); set option 'dataset'"
            )
        return matches[0]

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r")
        except OSError as err:
            raise SourceError(f"{NAME}: {self.path} is not a readable HDF5 file: {err}") from None

    def _check_file(self) -> int:
        """Record count, after checking every dataset's presence, shape and count."""
        with self._open() as f:
            total = None
            for name, fixed in self.spec.items():
                if name not in f:
                    raise SourceError(f"{NAME}: {self.path} has no dataset '{name}'")
                shape = f[name].shape
                allowed = [fixed.shape, fixed.shape[:-1]] if name == "mask" else [fixed.shape]
                if tuple(shape[1:]) not in allowed:
                    raise SourceError(
                        f"{NAME}: {self.path}: dataset '{name}' has shape {list(shape)}, expected [N, {list(fixed.shape)}]"
                    )
                if total is not None and shape[0] != total:
                    raise SourceError(f"{NAME}: {self.path}: dataset '{name}' has {shape[0]} records, others {total}")
                total = shape[0]
        return int(total)

    def _objects(self) -> np.ndarray:
        if self._visible is not None:
            return self._visible
        stat = self.path.stat()
        key = (str(self.path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _OBJECT_COUNTS:
            with self._open() as f:
                visibility = f["visibility"]
                counts = np.empty(self.total, np.int16)
                step = max(1, BLOCK_BYTES // (visibility.dtype.itemsize * self.layout.entities))
                for a in range(0, self.total, step):
                    counts[a : a + step] = count_objects(visibility[a : a + step])
            _OBJECT_COUNTS[key] = counts
        self._visible = _OBJECT_COUNTS[key]
        return self._visible

    def members(self, split: str) -> Sequence[int]:
        self.check_split(split)
        objects = self._objects() if self.max_objects is not None else None
        return self.table[split].members(self.total, objects, self.max_objects)

    def splits(self) -> dict[str, int]:
        objects = self._objects() if self.max_objects is not None else None
        return {name: len(s.members(self.total, objects, self.max_objects)) for name, s in self.table.items()}

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        members = self.members(split)
        wanted = [int(i) for i in members[max(start, 0) : max(min(stop, len(members)), 0)]]
        with self._open() as f:
            datasets = {name: f[name] for name in self.spec}
            row_bytes = sum(int(np.prod(d.shape[1:])) * d.dtype.itemsize for d in datasets.values())
            rows_per_block = max(1, BLOCK_BYTES // row_bytes)
            position = 0
            while position < len(wanted):
                first = wanted[position]
                end = position
                while end < len(wanted) and wanted[end] < first + rows_per_block:
                    end += 1
                last = wanted[end - 1]
                block = {name: d[first : last + 1] for name, d in datasets.items()}
                for index in wanted[position:end]:
                    arrays = {name: values[index - first] for name, values in block.items()}
                    meta = {"source": NAME, "variant": self.dataset, "split": split, "index": index, "views": [0]}
                    where = f"{self.path}: record {index}"
                    yield scene_from_arrays(self.layout, arrays, index=index, meta=meta, where=where)
                position = end
