"""RAVENS robot scenes (HHousen's fork of google-research/ravens, ``place-red-in-green``) as the
HHousen object-discovery loader reads them: three camera views per scene with label maps.

On disk: ``ravens_*_{train,test}.h5`` with ``color`` [3N,H,W,3] uint8, ``segm``
[3N,H,W] integer label maps and ``num_objects_on_table`` [N]. The generator appends each reset's
three camera images, so images 3s, 3s+1, 3s+2 are the three views of scene s and
``num_objects_on_table[s]`` counts its objects (the loader repeats it three times). Here a scene
keeps its three views; the loader's crops (CenterCrop(480, 500), or rows 232:−10, cols 50:−50 of
view 0) are load-time transforms.

Label ids are kept as they are: at most 12 (background, table, robot, arm, then up to 8 objects;
the loader one-hots to 12), so an id ≥ 12 is refused. Reading 0 = background, 1-3 = table, robot
and arm follows that listing order (the PyBullet body ids in the order ravens loads the plane,
workspace, robot and end effector); the files themselves do not name their ids.

Not documented: the cameras (the generator stores no intrinsics or poses, so none are emitted),
per-object attributes beyond the count, and which object ids are the ``red``/``green`` task objects.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from objdisc.data.schema import Scene, scene_key
from objdisc.data.sources.base import Source, SourceError, SourceInfo

SPLITS = ("train", "test")
VIEWS = 3
ENTITIES = 12
ROLES = {1: "table", 2: "robot", 3: "arm"}


class Ravens(Source):
    """Option ``max_objects`` (default none): keep scenes with ``num_objects_on_table`` at most this
    (the loader's filter, num_slots − 4 in its configs)."""

    info = SourceInfo(
        name="ravens",
        summary="RAVENS robot table scenes (HHousen export): 3 views per scene with 12-id label maps "
        "(0 background, 1-3 table/robot/arm, 4+ objects); no cameras or object attributes are stored",
        layout="data/raw/ravens/ravens_<name>_{train,test}.h5  (color [3N,H,W,3], segm [3N,H,W], "
        "num_objects_on_table [N])",
        origin="generated with github.com/HHousen/ravens (demos.py, task place-red-in-green)",
    )

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        max_objects = options.get("max_objects")
        self.files: dict[str, Path] = {}
        self.scene_ids: dict[str, np.ndarray] = {}
        for split in SPLITS:
            matches = sorted(self.root.glob(f"ravens_*_{split}.h5"))
            if len(matches) > 1:
                raise SourceError(f"ravens: several {split} files in {self.root}: {', '.join(m.name for m in matches)}")
            if matches:
                counts = _object_counts(str(matches[0]))
                ids = np.arange(len(counts))
                if max_objects is not None:
                    ids = ids[counts <= int(max_objects)]
                self.files[split] = matches[0]
                self.scene_ids[split] = ids
        if not self.files:
            raise SourceError(f"ravens: no ravens_*_train.h5 or ravens_*_test.h5 in {self.root}")

    def splits(self) -> dict[str, int]:
        return {split: len(ids) for split, ids in self.scene_ids.items()}

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        self.check_split(split)
        path = self.files[split]
        with h5py.File(path, "r") as f:
            color, segm, counts = f["color"], f["segm"], f["num_objects_on_table"]
            for index in self.scene_ids[split][max(start, 0) : stop]:
                index = int(index)
                views = slice(VIEWS * index, VIEWS * index + VIEWS)
                where = f"{path} scene {index} (images {views.start}-{views.stop - 1})"
                image = np.asarray(color[views])
                labels = np.asarray(segm[views])
                if labels.shape != image.shape[:3]:
                    raise SourceError(f"ravens: {where}: segm {labels.shape} does not match color {image.shape}")
                outside = labels[(labels < 0) | (labels >= ENTITIES)]
                if outside.size:
                    raise SourceError(f"ravens: {where}: label id {int(outside[0])} beyond the entity count {ENTITIES}")
                present = np.bincount(labels.ravel().astype(np.int64), minlength=ENTITIES) > 0
                objects = [{"id": k, "visible": bool(present[k]), "role": ROLES.get(k, "object")}
                           for k in range(1, ENTITIES)]
                yield {
                    "__key__": scene_key(index),
                    "image": np.ascontiguousarray(image, dtype=np.uint8),
                    "mask": labels.astype(np.uint8),
                    "objects": objects,
                    "meta": {"source": "ravens", "split": split, "index": index, "views": list(range(VIEWS)),
                             "num_objects_on_table": int(np.asarray(counts[index]).reshape(-1)[0])},
                }


@functools.lru_cache(maxsize=4)
def _object_counts(path: str) -> np.ndarray:
    """``num_objects_on_table`` per scene, after checking the three datasets agree in length."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise SourceError(f"ravens: cannot open {path}: {err}") from None
    with f:
        for key in ("color", "segm", "num_objects_on_table"):
            if key not in f:
                raise SourceError(f"ravens: {path} has no '{key}' dataset")
        color, segm = f["color"], f["segm"]
        counts = np.asarray(f["num_objects_on_table"]).reshape(-1)
        if color.ndim != 4 or color.shape[-1] != 3 or color.dtype != np.uint8:
            raise SourceError(f"ravens: {path}: color is {color.dtype} {color.shape}, expected uint8 [3N,H,W,3]")
        if segm.shape != color.shape[:3]:
            raise SourceError(f"ravens: {path}: segm {segm.shape} does not match color {color.shape}")
        if color.shape[0] != VIEWS * len(counts):
            raise SourceError(f"ravens: {path}: {color.shape[0]} images for {len(counts)} scenes "
                              f"(expected {VIEWS} views per scene)")
    return counts
