"""ClevrTex (Karazija et al. 2021): textured CLEVR-like renders, one view per scene.

On disk (karazijal/clevrtex), per image ``<idx>`` (six digits) of variant ``<v>`` in
``clevrtex_<v>/<idx // 1000>/``: ``CLEVRTEX_<v>_<idx>.png`` (RGB, sometimes RGBA), the mask
``CLEVRTEX_<v>_<idx>_flat.png`` (palette PNG whose raw byte per pixel is the entity index:
0 = ground, k ≥ 1 = JSON object k − 1) and the metadata ``CLEVRTEX_<v>_<idx>.json``.

The index is built as the benchmark loader builds it (glob, then refuse a missing mask, a
duplicate index or a gap), and the splits are its fractions of the sorted index list. Scenes keep
the original 240×320 frame: the benchmark's 0.8 centre crop is a load-time transform.
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

VARIANTS = ("full", "pbg", "vbg", "grassbg", "camo", "outd")
# Fractions of the index list: test first, then val, then train (clevrtex_eval.CLEVRTEX.splits).
SPLIT_FRACTIONS = {"test": (0.0, 0.1), "val": (0.1, 0.2), "train": (0.2, 1.0)}
HEIGHT, WIDTH = 240, 320
MAX_OBJECTS = 10


class ClevrTex(Source):
    """Option ``variant``: one of full, pbg, vbg, grassbg, camo, outd (default full).

    ``outd`` has no split in the reference loader (it is an evaluation set used whole); here it is
    the single split ``test``.
    """

    info = SourceInfo(
        name="clevrtex",
        summary="ClevrTex textured CLEVR (variants full/pbg/vbg/grassbg/camo/outd), 240x320, "
        "index masks, splits test/val/train = first 10%/next 10%/rest (outd: all test)",
        layout="data/raw/clevrtex/clevrtex_<variant>/<idx//1000>/CLEVRTEX_<variant>_<idx:06d>"
        "{.png,_flat.png,.json}",
        origin="https://www.robots.ox.ac.uk/~vgg/data/clevrtex/ (karazijal/clevrtex)",
    )

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        self.variant = str(options.get("variant", "full"))
        if self.variant not in VARIANTS:
            raise SourceError(f"clevrtex: unknown variant '{self.variant}' (known: {', '.join(VARIANTS)})")
        folder = f"clevrtex_{self.variant}"
        self.base = self.root if self.root.name == folder else self.root / folder
        if not self.base.is_dir():
            raise SourceError(f"clevrtex: missing folder {self.base}")
        self.images = build_index(str(self.base), self.variant)
        n = len(self.images)
        if self.variant == "outd":
            self.ranges = {"test": (0, n)}
        else:
            self.ranges = {s: (int(lo * n), int(hi * n)) for s, (lo, hi) in SPLIT_FRACTIONS.items()}

    def splits(self) -> dict[str, int]:
        return {split: hi - lo for split, (lo, hi) in self.ranges.items()}

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        count = self.check_split(split)
        lo = self.ranges[split][0]
        for position in range(max(start, 0), min(stop, count)):
            yield self.read_scene(lo + position, split)

    def read_scene(self, index: int, split: str) -> Scene:
        image_path = self.images[index]
        stem = image_path.name[: -len(".png")]
        mask_path = image_path.with_name(f"{stem}_flat.png")
        meta_path = image_path.with_name(f"{stem}.json")
        image = _read_image(image_path)
        mask = _read_index_mask(mask_path, image.shape[:2])
        try:
            metadata = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise SourceError(f"clevrtex: missing metadata {meta_path}") from None
        except json.JSONDecodeError as err:
            raise SourceError(f"clevrtex: {meta_path} is not valid JSON: {err}") from None
        objects_json = metadata.get("objects")
        if not isinstance(objects_json, list):
            raise SourceError(f"clevrtex: {meta_path} has no 'objects' list")
        if int(mask.max()) > len(objects_json):
            raise SourceError(
                f"clevrtex: {mask_path}: mask id {int(mask.max())} beyond the {len(objects_json)} objects "
                f"of {meta_path.name}"
            )
        # Mask value k ≥ 1 is Blender's pass index = 1 + the object's position in the JSON list.
        present = np.bincount(mask.ravel(), minlength=len(objects_json) + 1) > 0
        objects = [{"id": i + 1, "visible": bool(present[i + 1]), **obj} for i, obj in enumerate(objects_json)]
        return {
            "__key__": scene_key(index),
            "image": image[None],
            "mask": mask[None],
            "objects": objects,
            "meta": {
                "source": "clevrtex",
                "variant": self.variant,
                "split": split,
                "index": index,
                "views": [0],
                "file": image_path.name,
                "ground_material": metadata.get("ground_material"),
            },
        }


@functools.lru_cache(maxsize=4)
def build_index(base: str, variant: str) -> list[Path]:
    """Image paths by absolute index 0..N−1, checked as the reference loader checks them.

    Cached per process: the converter opens a source per shard job and globbing 50,000 renders
    each time would dominate short jobs.
    """
    prefix = f"CLEVRTEX_{variant}_"
    found: dict[int, Path] = {}
    for path in sorted(Path(base).glob(f"**/{prefix}??????.png")):
        digits = path.name[len(prefix) : -len(".png")]
        if not digits.isdigit():
            continue
        index = int(digits)
        if not path.with_name(f"{prefix}{digits}_flat.png").exists():
            raise SourceError(f"clevrtex: missing mask {path.with_name(f'{prefix}{digits}_flat.png')}")
        if index in found:
            raise SourceError(f"clevrtex: duplicate index {index}: {found[index]} and {path}")
        found[index] = path
    if not found:
        raise SourceError(f"clevrtex: no {prefix}<idx>.png images under {base}")
    missing = [i for i in range(max(found)) if i not in found]
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise SourceError(f"clevrtex: {len(missing)} image numbers missing under {base}: {shown}")
    return [found[i] for i in range(len(found))]


def _read_image(path: Path) -> np.ndarray:
    """RGB uint8 [240,320,3]; an alpha channel is dropped as the loader does (first 3 channels)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("RGB", "RGBA"):
                raise SourceError(f"clevrtex: {path} has mode {img.mode}, expected RGB or RGBA")
            array = np.asarray(img)[..., :3]
    except FileNotFoundError:
        raise SourceError(f"clevrtex: missing image {path}") from None
    except OSError as err:
        raise SourceError(f"clevrtex: cannot decode {path}: {err}") from None
    if array.shape != (HEIGHT, WIDTH, 3):
        raise SourceError(f"clevrtex: {path} is {array.shape[1]}x{array.shape[0]}, expected {WIDTH}x{HEIGHT}")
    return np.ascontiguousarray(array)


def _read_index_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The raw palette indices (never the palette colours): uint8 [H,W], 0 = ground."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise SourceError(f"clevrtex: mask {path} has mode {img.mode}, expected a palette PNG")
            mask = np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise SourceError(f"clevrtex: missing mask {path}") from None
    except OSError as err:
        raise SourceError(f"clevrtex: cannot decode {path}: {err}") from None
    if mask.shape != shape:
        raise SourceError(f"clevrtex: mask {path} has shape {mask.shape}, image has {shape}")
    if int(mask.max()) > MAX_OBJECTS:
        raise SourceError(f"clevrtex: mask {path} has id {int(mask.max())} > {MAX_OBJECTS}")
    return mask
