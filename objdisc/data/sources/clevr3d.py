"""CLEVR3D (ObSuRF / SRT / OSRT multi-view CLEVR) and the embedded synthetic scenes.

On disk (as stelzner/obsurf): ``metadata.npz`` with ``shape`` [N, max_objs] (> 0 = object present) and
``camera_pos`` [N, V, 3], plus optional per-object keys that are passed through; per scene and view
``images/img_{scene}_{view}.png`` (RGB or RGBA), ``masks/masks_{scene}_{view}.png`` (uint8 entity
index, 0 = background, < E) and optionally ``depths/depths_{scene}_{view}.png`` (uint16, depth =
value / 1638.4, distance along the ray).

Cameras are CLEVR's pinhole looking at the origin with +z up, so they are rebuilt here from the
camera position alone: ``look_at(camera_pos)`` and ``clevr_intrinsics(H, W)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from objdisc.data.schema import Scene, scene_key
from objdisc.data.sources.base import Source, SourceError, SourceInfo
from objdisc.data.sources.options import SplitRange, check_options, parse_splits
from objdisc.geometry import clevr_intrinsics, look_at

# Scene-id ranges of the reference loaders (srt/osrt validation range; ObSuRF uses 70000-70500).
CLEVR3D_SPLITS = {"train": SplitRange(0, 70000), "val": SplitRange(70000, 75000), "test": SplitRange(85000, 100000)}
DEPTH_SCALE = 1638.4  # = 65536 * 0.025


class Clevr3D(Source):
    """Options: ``splits`` {name: [start, stop)} of scene ids, or fractions of the scenes such as
    [0.0, 0.8] (``objdisc.data.sources.options``; a range past the last scene of ``metadata.npz``
    is an error naming ``splits.<name>``), ``max_objects`` (6: CLEVR3D keeps scenes with at most 6
    objects), ``entities`` (11: mask ids must be below it), ``views`` (list of view ids to keep;
    default all).

    Without ``splits`` the reference loaders' table applies (train [0, 70000), val [70000, 75000),
    test [85000, 100000)), cut at the last scene of ``metadata.npz``, so a partial download (or
    a smaller ``objdisc synth`` set) converts what it has; a default split past the end is empty."""

    info = SourceInfo(
        name="clevr3d",
        summary="ObSuRF multi-view CLEVR (CLEVR3D), also the layout `objdisc synth` writes",
        layout="data/raw/clevr3d/{metadata.npz, images/img_<scene>_<view>.png, "
        "masks/masks_<scene>_<view>.png, depths/depths_<scene>_<view>.png}",
        origin="ObSuRF project (stelzner/obsurf README: CLEVR3D download)",
    )

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        check_options(options, {"splits", "max_objects", "entities", "views"}, self.info.name)
        meta_path = self.root / "metadata.npz"
        if not meta_path.is_file():
            raise SourceError(f"{self.info.name}: missing {meta_path}")
        with np.load(meta_path, allow_pickle=False) as meta:
            self.metadata = {k: meta[k] for k in meta.files}
        for key in ("shape", "camera_pos"):
            if key not in self.metadata:
                raise SourceError(f"{self.info.name}: {meta_path} has no '{key}' array")
        self.num_scenes = len(self.metadata["shape"])
        self.max_objects = int(options.get("max_objects", 6))
        self.entities = int(options.get("entities", 11))
        all_views = self.metadata["camera_pos"].shape[1]
        self.views = [int(v) for v in options.get("views", range(all_views))]
        if not self.views or max(self.views) >= all_views:
            raise SourceError(f"{self.info.name}: views {self.views} not in 0..{all_views - 1}")
        table = parse_splits(options["splits"], self.info.name) if "splits" in options else dict(CLEVR3D_SPLITS)
        counts = (self.metadata["shape"] > 0).sum(axis=1)
        self.split_ids = {
            name: np.asarray(split.members(self.num_scenes, counts, self.max_objects), dtype=np.int64)
            for name, split in table.items()
        }

    def splits(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in self.split_ids.items()}

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        self.check_split(split)
        for index in self.split_ids[split][start:stop]:
            yield self.read_scene(int(index), split)

    def read_scene(self, index: int, split: str) -> Scene:
        images, masks, depths = [], [], []
        for view in self.views:
            images.append(self._png(f"images/img_{index}_{view}.png", mode="RGB"))
            masks.append(self._png(f"masks/masks_{index}_{view}.png"))
            depth_path = self.root / f"depths/depths_{index}_{view}.png"
            if depth_path.exists():
                depths.append(self._png(f"depths/depths_{index}_{view}.png").astype(np.float32) / DEPTH_SCALE)
        image = np.stack(images)
        mask = np.stack(masks)
        if mask.ndim != 3 or mask.shape != image.shape[:3]:
            raise SourceError(f"{self.info.name}: scene {index}: masks {mask.shape} do not match images {image.shape}")
        if mask.max() >= self.entities:
            raise SourceError(
                f"{self.info.name}: {self.root}/masks/masks_{index}_*.png: mask id {int(mask.max())} "
                f"beyond the entity count {self.entities}"
            )
        height, width = image.shape[1:3]
        cam_pos = self.metadata["camera_pos"][index][self.views].astype(np.float64)
        scene: Scene = {
            "__key__": scene_key(index),
            "image": image,
            "mask": mask.astype(np.uint8),
            "cam2world": look_at(cam_pos),
            "intrinsics": np.repeat(clevr_intrinsics(height, width)[None], len(self.views), axis=0),
            "objects": self._objects(index),
            "meta": {"source": self.info.name, "split": split, "index": index, "views": self.views},
        }
        if depths:
            if len(depths) != len(self.views):
                raise SourceError(f"{self.info.name}: scene {index}: depth PNGs missing for some views")
            scene["depth"] = np.stack(depths)
        return scene

    def _objects(self, index: int) -> list[dict]:
        """Present objects with every per-object metadata array; ``id`` is the object's mask id."""
        shape = self.metadata["shape"][index]
        objects = []
        for slot in np.flatnonzero(shape > 0):
            obj: dict[str, Any] = {"id": int(slot) + 1}
            for key, values in self.metadata.items():
                if key == "camera_pos" or values.ndim < 2 or values.shape[0] != self.num_scenes:
                    continue
                if values.shape[1] == shape.shape[0]:
                    obj[key] = values[index, slot].tolist()
            objects.append(obj)
        return objects

    def _png(self, rel: str, mode: str | None = None) -> np.ndarray:
        path = self.root / rel
        try:
            with Image.open(path) as img:
                if mode is not None:
                    img = img.convert(mode)
                return np.asarray(img)
        except FileNotFoundError:
            raise SourceError(f"{self.info.name}: missing file {path}") from None
        except OSError as err:
            raise SourceError(f"{self.info.name}: cannot decode {path}: {err}") from None
