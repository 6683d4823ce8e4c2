"""3D Shapes (Burgess & Kim 2018): 480,000 64×64 renders of one object in a room, with the six
generating factors, from DeepMind's ``3dshapes.h5``.

``images`` [N,64,64,3] uint8 and ``labels`` [N,6] float64 whose columns are floor_hue, wall_hue,
object_hue, scale, shape, orientation. There are no masks; ``objects`` is one entry holding the six
factors by name (room factors included, as the file gives them per image). A file without
``labels`` gives ``objects = []``.

Splits as object-discovery-pytorch (from SLATE) takes them: train [0, 400000), val
[400001, 430000), test [430001, 460000) (records 400000, 430000 and the last 20,000 unused),
capped at the file's length; option ``splits`` replaces the table (record numbers or fractions,
``objdisc.data.sources.options``; a range past the end of the file is an error). Images are read
in slices of ~32 MiB.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from objdisc.data.schema import Scene, scene_key
from objdisc.data.sources.base import Source, SourceError, SourceInfo
from objdisc.data.sources.options import SplitRange, check_options, parse_splits

NAME = "shapes3d"
FILE = "3dshapes.h5"
FACTORS = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
SPLITS = {"train": SplitRange(0, 400_000), "val": SplitRange(400_001, 430_000), "test": SplitRange(430_001, 460_000)}
BLOCK_BYTES = 32 << 20


class Shapes3D(Source):
    info = SourceInfo(
        name=NAME,
        summary="3D Shapes (DeepMind), 64x64, one object, six factor labels, no masks, "
        "splits train [0,400000) / val [400001,430000) / test [430001,460000)",
        layout=f"data/raw/shapes3d/{FILE}",
        origin="https://storage.googleapis.com/3d-shapes/3dshapes.h5 (gs://3d-shapes, google-deepmind/3d-shapes)",
    )

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        check_options(options, {"splits"}, NAME)
        self.path = self.root if self.root.is_file() else self.root / FILE
        if not self.path.is_file():
            raise SourceError(f"{NAME}: missing {self.path}")
        self.table = parse_splits(options["splits"], NAME) if "splits" in options else dict(SPLITS)
        with self._open() as f:
            if "images" not in f:
                raise SourceError(f"{NAME}: {self.path} has no dataset 'images'")
            shape = f["images"].shape
            if len(shape) != 4 or tuple(shape[1:]) != (64, 64, 3) or f["images"].dtype != np.uint8:
                raise SourceError(
                    f"{NAME}: {self.path}: 'images' is {f['images'].dtype} {list(shape)}, expected uint8 [N, 64, 64, 3]"
                )
            self.total = int(shape[0])
            self.has_labels = "labels" in f
            if self.has_labels and tuple(f["labels"].shape) != (self.total, len(FACTORS)):
                raise SourceError(
                    f"{NAME}: {self.path}: 'labels' has shape {list(f['labels'].shape)}, expected [{self.total}, 6]"
                )

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r")
        except OSError as err:
            raise SourceError(f"{NAME}: {self.path} is not a readable HDF5 file: {err}") from None

    def members(self, split: str) -> Sequence[int]:
        self.check_split(split)
        return self.table[split].members(self.total, None, None)

    def splits(self) -> dict[str, int]:
        return {name: len(s.members(self.total, None, None)) for name, s in self.table.items()}

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        members = self.members(split)
        wanted = members[max(start, 0) : max(min(stop, len(members)), 0)]
        if not len(wanted):
            return
        rows = max(1, BLOCK_BYTES // (64 * 64 * 3))
        with self._open() as f:
            images = f["images"]
            labels = f["labels"] if self.has_labels else None
            # Split members are consecutive record numbers, so plain slices cover them.
            for a in range(wanted[0], wanted[-1] + 1, rows):
                b = min(a + rows, wanted[-1] + 1)
                block = images[a:b]
                factors = labels[a:b] if labels is not None else None
                for index in range(a, b):
                    objects = []
                    if factors is not None:
                        objects = [{name: float(v) for name, v in zip(FACTORS, factors[index - a])}]
                    yield {
                        "__key__": scene_key(index),
                        "image": np.ascontiguousarray(block[index - a][None]),
                        "objects": objects,
                        "meta": {"source": NAME, "split": split, "index": index, "views": [0]},
                    }
