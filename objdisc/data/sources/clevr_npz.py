"""CLEVR with masks as the ClevrTex framework stores it: one compressed npz per record
(karazijal/clevrtex's conversion of the DeepMind records).

On disk, under ``clevr_with_masks/``: record i of the DeepMind TFRecord → ``<i // 10000>/<i>.npz``
holding every TFRecord feature with the reader's shapes (image [240,320,3], mask [11,240,320,1]
0/255, x/y/z/rotation/visibility [11], pixel_coords [11,3], size/material/shape/color [11] uint8),
and ``manifest_ind.json`` mapping ``str(i)`` to the relative path. As in the framework's loader, a
missing or unreadable manifest is rebuilt by globbing ``**/*.npz`` and reading the integer after
the last ``_`` of each file stem (plain ``<i>`` stems too); here the rebuilt index stays in memory
(the raw folder is never written) and must cover 0..N−1 without gaps.

Splits are the framework's: test [0, 15000), val [15000, 30000), train [30000, N), capped at the
record count (a default split past the end of a shorter folder is empty). Option
``max_objects`` (6 for the framework's ``clevr6``, which keeps Σ visibility ≤ 7) keeps scenes with
at most that many visible objects; option ``splits`` replaces the table as for the TFRecord
source (record numbers or fractions, ``objdisc.data.sources.options``; a range past the last
record is an error). Scenes are built by the same code as ``clevr-with-masks`` scenes (same mask ids and
``objects``), so both routes give the same pixels, masks and objects for a record.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from objdisc.data.schema import Scene
from objdisc.data.sources.base import Source, SourceError, SourceInfo
from objdisc.data.sources.multi_object import CLEVR, count_objects, scene_from_arrays
from objdisc.data.sources.options import SplitRange, check_options, parse_max_objects, parse_splits

FOLDER = "clevr_with_masks"
SPLITS = {"test": SplitRange(0, 15_000), "val": SplitRange(15_000, 30_000), "train": SplitRange(30_000)}
NAME = "clevr-npz"

# Per (folder, record count): visible objects per record.
_OBJECT_COUNTS: dict[tuple[str, int], np.ndarray] = {}


def rebuild_manifest(base: Path) -> dict[str, str]:
    """``str(i)`` → relative npz path, from the file names (the integer after the last ``_``)."""
    index: dict[str, str] = {}
    for path in sorted(base.glob("**/*.npz")):
        digits = path.stem.split("_")[-1]
        if not digits.isdigit():
            continue
        key = str(int(digits))
        if key in index:
            raise SourceError(f"{NAME}: record {key} twice: {base / index[key]} and {path}")
        index[key] = path.relative_to(base).as_posix()
    return index


_MANIFESTS: dict[tuple[str, int | None], dict[str, str]] = {}


def load_manifest(base: Path) -> dict[str, str]:
    """The checked index 0..N−1, cached per folder and manifest version: the converter opens the
    source once per job and globbing 100,000 files each time would dominate short jobs."""
    manifest = base / "manifest_ind.json"
    key = (str(base.resolve()), manifest.stat().st_mtime_ns if manifest.is_file() else None)
    if key not in _MANIFESTS:
        _MANIFESTS[key] = _load_manifest(base, manifest)
    return _MANIFESTS[key]


def _load_manifest(base: Path, manifest: Path) -> dict[str, str]:
    try:
        index = json.loads(manifest.read_text())
        if not isinstance(index, dict) or not all(isinstance(v, str) for v in index.values()):
            raise ValueError("not a mapping of index to path")
    except (OSError, ValueError):
        index = rebuild_manifest(base)
    if not index:
        raise SourceError(f"{NAME}: no manifest_ind.json and no <i>.npz files under {base}")
    try:
        by_number = {int(key): path for key, path in index.items()}
    except ValueError:
        raise SourceError(f"{NAME}: the index under {base} has a non-integer key") from None
    if len(by_number) != len(index):
        raise SourceError(f"{NAME}: the index under {base} names a record twice")
    if sorted(by_number) != list(range(len(by_number))):
        missing = sorted(set(range(max(by_number) + 1)) - set(by_number))[:10]
        raise SourceError(f"{NAME}: the index under {base} is not 0..N-1 (missing {missing})")
    return {str(k): by_number[k] for k in range(len(by_number))}


class ClevrNpz(Source):
    info = SourceInfo(
        name=NAME,
        summary="CLEVR with masks as ClevrTex-framework npz files (one per record), 240x320, "
        "splits test [0,15000) / val [15000,30000) / train [30000,N), max_objects for CLEVR6",
        layout="data/raw/clevr-npz/clevr_with_masks/{manifest_ind.json, <i//10000>/<i>.npz}",
        origin="converted from the DeepMind clevr_with_masks_train.tfrecords (gs://multi-object-datasets) "
        "by the ClevrTex framework's script (karazijal/clevrtex)",
    )

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        check_options(options, {"splits", "max_objects"}, NAME)
        self.base = self.root / FOLDER if (self.root / FOLDER).is_dir() else self.root
        if not self.base.is_dir():
            raise SourceError(f"{NAME}: {self.base} is not a folder")
        self.index = load_manifest(self.base)
        self.max_objects = parse_max_objects(options.get("max_objects"), NAME)
        self.table = parse_splits(options["splits"], NAME) if "splits" in options else dict(SPLITS)
        self._visible: np.ndarray | None = None  # kept on the instance: pickled workers never recount

    def _load(self, number: int) -> dict[str, np.ndarray]:
        path = self.base / self.index[str(number)]
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except FileNotFoundError:
            raise SourceError(f"{NAME}: missing {path} (record {number} of the manifest)") from None
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise SourceError(f"{NAME}: {path} is not a readable npz file: {err}") from None

    def _objects(self) -> np.ndarray:
        """Visible objects per record (reads only ``visibility`` from each file)."""
        if self._visible is not None:
            return self._visible
        key = (str(self.base.resolve()), len(self.index))
        if key not in _OBJECT_COUNTS:
            counts = np.empty(len(self.index), np.int16)
            for number in range(len(self.index)):
                path = self.base / self.index[str(number)]
                try:
                    with np.load(path, allow_pickle=False) as npz:
                        visibility = npz["visibility"]
                except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
                    raise SourceError(f"{NAME}: cannot read 'visibility' from {path}: {err}") from None
                counts[number] = count_objects(visibility.reshape(-1))
            _OBJECT_COUNTS[key] = counts
        self._visible = _OBJECT_COUNTS[key]
        return self._visible

    def members(self, split: str) -> Sequence[int]:
        self.check_split(split)
        objects = self._objects() if self.max_objects is not None else None
        return self.table[split].members(len(self.index), objects, self.max_objects)

    def splits(self) -> dict[str, int]:
        objects = self._objects() if self.max_objects is not None else None
        return {name: len(s.members(len(self.index), objects, self.max_objects)) for name, s in self.table.items()}

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        members = self.members(split)
        for number in members[max(start, 0) : max(min(stop, len(members)), 0)]:
            number = int(number)
            arrays = self._load(number)
            where = f"{self.base / self.index[str(number)]}"
            missing = [name for name in CLEVR.features() if name not in arrays]
            if missing:
                raise SourceError(f"{where}: missing arrays {missing}")
            meta = {"source": NAME, "variant": None, "split": split, "index": number, "views": [0]}
            yield scene_from_arrays(CLEVR, arrays, index=number, meta=meta, where=where)
