"""The dataset index: ``<dataset_dir>/index.json``.

Building the index decodes every shard, so a dataset with an index is known to be readable and
to match the schema. The index records:

* ``schema``: field → dtype and per-scene shape (an axis that differs between splits is null);
* per split the scene count and the shards with byte size and sha256 (``verify_index`` compares
  them with the files: DVC checks its own outputs, this checks data placed by hand);
* statistics per split: objects per scene, pixel mean and std (RGB in [0, 1]), views and size;
* the conversion params and the scenes the converter skipped, passed through;
* a key → ``[shard, offset]`` table, so ``read_scene`` reaches one scene without a scan.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from objdisc.data.schema import Scene, scene_signature
from objdisc.io import write_text
from objdisc.data.storage import (
    StorageError,
    iter_shard,
    parse_shard_name,
    sha256_file,
)

INDEX_NAME = "index.json"
INDEX_VERSION = 1


def objects_in(scene: Scene) -> int:
    """Objects in a scene: distinct nonzero mask ids over all views, else the objects list."""
    if "mask" in scene:
        return int(np.count_nonzero(np.bincount(scene["mask"].ravel(), minlength=256)[1:]))
    return len(scene["objects"])


class _SplitStats:
    """Running statistics of one split. Pixel sums are exact integers, so the result does not
    depend on shard order or on floating-point accumulation."""

    def __init__(self) -> None:
        self.objects: list[int] = []
        self.pixels = 0
        self.sum = np.zeros(3, dtype=np.int64)
        self.sum_sq = np.zeros(3, dtype=np.int64)
        self.shape: tuple[int, int, int] | None = None

    def add(self, scene: Scene) -> None:
        self.objects.append(objects_in(scene))
        pixels = scene["image"].reshape(-1, 3)
        self.pixels += len(pixels)
        self.sum += pixels.sum(axis=0, dtype=np.int64)
        self.sum_sq += (pixels.astype(np.int64) ** 2).sum(axis=0)
        self.shape = scene["image"].shape[:3]

    def result(self) -> dict[str, Any]:
        counts = np.array(self.objects)
        mean = self.sum / (self.pixels * 255.0)
        var = self.sum_sq / (self.pixels * 255.0**2) - mean**2
        views, height, width = self.shape or (0, 0, 0)
        return {
            "objects_per_scene": {
                "mean": float(counts.mean()),
                "min": int(counts.min()),
                "max": int(counts.max()),
                "histogram": np.bincount(counts).tolist(),  # [k] = scenes with k objects
            },
            "pixel_mean": [float(x) for x in mean],
            "pixel_std": [float(x) for x in np.sqrt(np.maximum(var, 0.0))],
            "views": int(views),
            "height": int(height),
            "width": int(width),
        }


def _find_shards(dataset_dir: Path) -> dict[str, list[tuple[int, Path, str]]]:
    shards: dict[str, list[tuple[int, Path, str]]] = defaultdict(list)
    for path in sorted(dataset_dir.iterdir()):
        parsed = parse_shard_name(path.name)
        if parsed is not None and path.is_file():
            split, index, fmt = parsed
            shards[split].append((index, path, fmt))
    return {split: sorted(found) for split, found in sorted(shards.items())}


def _merge_schema(schema: dict[str, dict[str, Any]], signature: dict[str, dict[str, Any]]) -> None:
    """Fold one split's signature into the dataset schema; axes that differ become null."""
    for name, sig in signature.items():
        if name not in schema:
            schema[name] = {"dtype": sig["dtype"], "shape": list(sig["shape"])}
            continue
        shape = schema[name]["shape"]
        if len(shape) != len(sig["shape"]):
            schema[name]["shape"] = [None] * max(len(shape), len(sig["shape"]))
        else:
            schema[name]["shape"] = [a if a == b else None for a, b in zip(shape, sig["shape"])]


def build_index(
    dataset_dir: Path, params: dict | None = None, progress: bool = True, out: Path | None = None
) -> dict:
    """Decode every shard of ``dataset_dir``, write the index atomically and return it.

    The index goes to ``out`` (default ``<dataset_dir>/index.json``; the DVC pipeline keeps it
    beside the shards folder, in ``data/index/<dataset>.json``, so the two are separate outputs).

    ``params`` are the conversion params, recorded under ``conversion``; its ``skipped`` entry
    (scenes the converter dropped, with reasons) moves to the top-level ``skipped`` list.
    Raises ``StorageError`` naming the shard when one does not decode, mixes formats, or breaks
    the split's layout, and when a key occurs twice in a split.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise StorageError(f"{dataset_dir}: dataset folder does not exist")
    conversion = dict(params or {})
    skipped = list(conversion.pop("skipped", None) or [])
    found = _find_shards(dataset_dir)
    if not found:
        raise StorageError(f"{dataset_dir}: no shards (<split>-NNNNNN.tar|.h5|.zarr.zip) found")
    formats = {fmt for shards in found.values() for _, _, fmt in shards}
    if len(formats) > 1:
        raise StorageError(f"{dataset_dir}: shards of several formats {sorted(formats)}; keep one")

    total = sum(len(shards) for shards in found.values())
    bar = tqdm(total=total, desc=f"index {dataset_dir.name}", unit="shard", disable=not progress)
    schema: dict[str, dict[str, Any]] = {}
    splits: dict[str, Any] = {}
    statistics: dict[str, Any] = {}
    keys: dict[str, dict[str, list[Any]]] = {}
    try:
        for split, shards in found.items():
            stats = _SplitStats()
            split_keys: dict[str, list[Any]] = {}
            entries = []
            first: tuple[str, dict[str, Any]] | None = None  # (shard, signature) of the split
            for _, path, _ in shards:
                scenes = 0
                for offset, scene in iter_shard(path):
                    key = scene["__key__"]
                    signature = scene_signature(scene)
                    if first is None:
                        first = (path.name, signature)
                    elif signature != first[1]:
                        raise StorageError(
                            f"{path}: scene '{key}' has layout {signature}, but split '{split}' "
                            f"starts with layout {first[1]} in {first[0]}"
                        )
                    if key in split_keys:
                        raise StorageError(
                            f"{path}: key '{key}' also in {split_keys[key][0]} (split '{split}')"
                        )
                    split_keys[key] = [path.name, offset]
                    stats.add(scene)
                    scenes += 1
                if scenes == 0:
                    raise StorageError(f"{path}: shard holds no scenes")
                entries.append(
                    {
                        "path": path.name,
                        "scenes": scenes,
                        "bytes": path.stat().st_size,
                        "sha256": sha256_file(path),
                    }
                )
                bar.update(1)
            assert first is not None
            _merge_schema(schema, first[1])
            splits[split] = {"scenes": len(split_keys), "shards": entries}
            statistics[split] = stats.result()
            keys[split] = split_keys
    finally:
        bar.close()

    index = {
        "version": INDEX_VERSION,
        "format": formats.pop(),
        "schema": schema,
        "splits": splits,
        "statistics": statistics,
        "conversion": conversion,
        "skipped": skipped,
        "keys": keys,
    }
    try:
        text = json.dumps(index, indent=1, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as err:
        raise StorageError(f"{dataset_dir}: conversion params are not JSON-serialisable: {err}") from None
    out = Path(out) if out is not None else dataset_dir / INDEX_NAME
    write_text(out, text)
    return index


def load_index(dataset_dir: Path) -> dict:
    """Read ``<dataset_dir>/index.json`` (or an index file given directly); clear errors when it
    is missing or not an index."""
    path = Path(dataset_dir)
    if path.suffix != ".json":
        path = path / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no dataset index; build it with `objdisc index {dataset_dir}` after converting"
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StorageError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
        version = index.get("version") if isinstance(index, dict) else None
        raise StorageError(f"{path}: index version {version!r}, this code reads {INDEX_VERSION}")
    for section in ("format", "schema", "splits", "statistics", "keys"):
        if section not in index:
            raise StorageError(f"{path}: section '{section}' is missing")
    return index


def verify_index(dataset_dir: Path, index_path: Path | None = None) -> list[str]:
    """Compare the index with the shards on disk; return the problems found (empty: fine)."""
    dataset_dir = Path(dataset_dir)
    index = load_index(index_path or dataset_dir)
    problems = []
    indexed = set()
    for split, info in index["splits"].items():
        for entry in info["shards"]:
            path = dataset_dir / entry["path"]
            indexed.add(entry["path"])
            if not path.is_file():
                problems.append(f"{path}: missing shard of split '{split}'")
                continue
            size = path.stat().st_size
            if size != entry["bytes"]:
                problems.append(f"{path}: {size} bytes, the index says {entry['bytes']}")
            elif sha256_file(path) != entry["sha256"]:
                problems.append(f"{path}: sha256 differs from the index")
    for split_shards in _find_shards(dataset_dir).values():
        for _, path, _ in split_shards:
            if path.name not in indexed:
                problems.append(f"{path}: shard not in the index (rebuild it)")
    return problems
