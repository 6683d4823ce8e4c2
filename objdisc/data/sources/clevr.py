"""CLEVR v1.0 (Johnson et al. 2017): the original release, images and scene graphs, no masks.

On disk: ``CLEVR_v1.0/images/<split>/CLEVR_<split>_<idx:06d>.png`` (480×320 RGBA renders, alpha
opaque) and ``CLEVR_v1.0/scenes/CLEVR_<split>_scenes.json`` (``{"info", "scenes": [...]}``, one
entry per image in index order). The release has scene graphs for train and val only, so test
scenes come without objects. Splits are the release's folders (70,000 / 15,000 / 15,000).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from objdisc.data.schema import Scene, scene_key
from objdisc.data.sources.base import Source, SourceError, SourceInfo

SPLITS = ("train", "val", "test")
HEIGHT, WIDTH = 320, 480
# The release ships no scene graphs for these splits; everywhere else a missing JSON is an error.
UNANNOTATED = ("test",)


class Clevr(Source):
    """No options. The root is ``data/raw/clevr`` holding ``CLEVR_v1.0/`` (or that folder itself)."""

    info = SourceInfo(
        name="clevr",
        summary="CLEVR v1.0 images (320x480) with scene-graph objects (train/val; test has none), no masks",
        layout="data/raw/clevr/CLEVR_v1.0/{images/<split>/CLEVR_<split>_<idx:06d>.png, "
        "scenes/CLEVR_<split>_scenes.json}  (split: train, val, test)",
        origin="https://cs.stanford.edu/people/jcjohns/clevr/ (CLEVR_v1.0.zip)",
    )

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        self.base = self.root if (self.root / "images").is_dir() else self.root / "CLEVR_v1.0"
        if not (self.base / "images").is_dir():
            raise SourceError(f"clevr: no images/ folder in {self.root} or {self.root / 'CLEVR_v1.0'}")
        self.counts = {
            split: _count_images(self.base / "images" / split, split)
            for split in SPLITS
            if (self.base / "images" / split).is_dir()
        }
        if not self.counts:
            raise SourceError(f"clevr: no split folders ({', '.join(SPLITS)}) in {self.base / 'images'}")

    def splits(self) -> dict[str, int]:
        return dict(self.counts)

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        count = self.check_split(split)
        scenes_path = self.base / "scenes" / f"CLEVR_{split}_scenes.json"
        if scenes_path.exists():
            graphs = _scene_graphs(str(scenes_path))
            if len(graphs) != count:
                raise SourceError(f"clevr: {scenes_path} has {len(graphs)} scenes, images/{split} has {count} images")
        elif split in UNANNOTATED:
            graphs = None
        else:
            raise SourceError(f"clevr: missing {scenes_path}")
        for index in range(max(start, 0), min(stop, count)):
            name = f"CLEVR_{split}_{index:06d}.png"
            objects: list[dict] = []
            if graphs is not None:
                graph = graphs[index]
                if graph.get("image_index") != index or graph.get("image_filename") != name:
                    raise SourceError(
                        f"clevr: {scenes_path} entry {index} describes {graph.get('image_filename')} "
                        f"(image_index {graph.get('image_index')}), expected {name}"
                    )
                objects = list(graph["objects"])
            image = _read_image(self.base / "images" / split / name)
            yield {
                "__key__": scene_key(index),
                "image": image[None],
                "objects": objects,
                "meta": {"source": "clevr", "split": split, "index": index, "views": [0], "file": name},
            }


def _count_images(folder: Path, split: str) -> int:
    """Number of images, after checking they are exactly CLEVR_<split>_000000.png … without gaps."""
    prefix = f"CLEVR_{split}_"
    indices = sorted(
        int(p.name[len(prefix) : -4])
        for p in folder.glob(f"{prefix}??????.png")
        if p.name[len(prefix) : -4].isdigit()
    )
    for expected, found in enumerate(indices):
        if found != expected:
            raise SourceError(f"clevr: missing {folder / f'{prefix}{expected:06d}.png'}")
    return len(indices)


@functools.lru_cache(maxsize=2)
def _scene_graphs(path: str) -> list[dict]:
    """The ``scenes`` list of a scenes JSON. Cached per process: the train file is hundreds of MB
    and the converter opens a source for every shard job."""
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise SourceError(f"clevr: {path} is not valid JSON: {err}") from None
    scenes = data.get("scenes") if isinstance(data, dict) else None
    if not isinstance(scenes, list):
        raise SourceError(f"clevr: {path} has no 'scenes' list")
    return scenes


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            if img.mode not in ("RGB", "RGBA"):
                raise SourceError(f"clevr: {path} has mode {img.mode}, expected RGB or RGBA")
            array = np.asarray(img)[..., :3]
    except FileNotFoundError:
        raise SourceError(f"clevr: missing image {path}") from None
    except OSError as err:
        raise SourceError(f"clevr: cannot decode {path}: {err}") from None
    if array.shape != (HEIGHT, WIDTH, 3):
        raise SourceError(f"clevr: {path} is {array.shape[1]}x{array.shape[0]}, expected {WIDTH}x{HEIGHT}")
    return np.ascontiguousarray(array)
