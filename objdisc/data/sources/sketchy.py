"""Sketchy (Cabi et al. 2019) robot-manipulation frames as GENESIS-v2 prepared them: 2D images,
no masks, no cameras.

On disk: ``processed/{train,valid,test}/ep<6 digits>/ep*.png``, 128×128, with the
list of a split optionally cached in ``processed/<split>_images.txt``. GENESIS' loader takes that
list when it exists, else globs; every PNG is one item. Here the list file is followed when present
(its lines may carry another machine's prefix: the part from ``processed/`` on is resolved under
the root), otherwise the glob is sorted, since an unsorted glob has no stable order.

GENESIS' preparation script (scripts/sketchy_preparation.py in applied-ai-lab/genesis) names
the files ``ep<E>_t<T>_<view>_<crop>.png``: T the frame (every 4th), view ``fl``/``fr`` (basket
front left/right camera), crop ``full`` (the centre square) or ``c0``…``c5`` (six overlapping
crops), each resized to 128×128; those parts go to ``meta`` when a name has that form.

Not documented anywhere we rely on: any segmentation or object annotation (there is none), the
cameras (the state files hold robot state, not calibrated cameras) and the frames' scene contents.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from objdisc.data.schema import Scene, scene_key
from objdisc.data.sources.base import Source, SourceError, SourceInfo

SPLITS = ("train", "valid", "test")
SIZE = 128
NAME = re.compile(r"ep(?P<episode>\d+)_t(?P<frame>\d+)_(?P<view>[a-z]+)_(?P<crop>full|c\d+)")


class Sketchy(Source):
    """No options. The root holds ``processed/`` as GENESIS' sketchy_preparation.py writes it."""

    info = SourceInfo(
        name="sketchy",
        summary="Sketchy robot frames prepared by GENESIS-v2: 128x128 RGB, splits train/valid/test; "
        "no masks, objects or cameras exist for it (undocumented beyond the image files)",
        layout="data/raw/sketchy/processed/<split>/ep<NNNNNN>/ep<NNNNNN>_t<TTT>_<fl|fr>_<full|cK>.png "
        "[+ processed/<split>_images.txt]",
        origin="DeepMind Sketchy (github.com/deepmind/deepmind-research/tree/master/sketchy), "
        "prepared with applied-ai-lab/genesis scripts/sketchy_preparation.py",
    )

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        self.processed = self.root / "processed"
        if not self.processed.is_dir():
            raise SourceError(f"sketchy: missing folder {self.processed}")
        self.files = {
            split: _file_list(str(self.processed), split)
            for split in SPLITS
            if (self.processed / split).is_dir() or (self.processed / f"{split}_images.txt").is_file()
        }
        if not self.files:
            raise SourceError(f"sketchy: no split folders ({', '.join(SPLITS)}) in {self.processed}")

    def splits(self) -> dict[str, int]:
        return {split: len(files) for split, files in self.files.items()}

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        count = self.check_split(split)
        for index in range(max(start, 0), min(stop, count)):
            path = self.files[split][index]
            meta: dict[str, Any] = {"source": "sketchy", "split": split, "index": index, "views": [0],
                                    "file": str(path.relative_to(self.processed))}
            match = NAME.fullmatch(path.stem)
            if match:
                meta.update(episode=int(match["episode"]), frame=int(match["frame"]), camera=match["view"],
                            crop=match["crop"])
            yield {"__key__": scene_key(index), "image": _read_image(path)[None], "objects": [], "meta": meta}


@functools.lru_cache(maxsize=8)
def _file_list(processed: str, split: str) -> list[Path]:
    """The split's files in the reference order (cached per process: one source per shard job)."""
    base = Path(processed)
    listing = base / f"{split}_images.txt"
    if listing.is_file():
        files = []
        for line in listing.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            marker = line.rfind("processed/")
            files.append(base / line[marker + len("processed/") :] if marker >= 0 else base.parent / line)
        return files
    return sorted(base.glob(f"{split}/ep*/ep*.png"))


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            if img.mode not in ("RGB", "RGBA"):
                raise SourceError(f"sketchy: {path} has mode {img.mode}, expected RGB")
            array = np.asarray(img)[..., :3]
    except FileNotFoundError:
        raise SourceError(f"sketchy: missing image {path}") from None
    except OSError as err:
        raise SourceError(f"sketchy: cannot decode {path}: {err}") from None
    if array.shape != (SIZE, SIZE, 3):
        raise SourceError(f"sketchy: {path} is {array.shape[1]}x{array.shape[0]}, expected {SIZE}x{SIZE}")
    return np.ascontiguousarray(array)
