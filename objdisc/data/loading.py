"""DataLoaders over converted shards: deterministic, DDP-correct and resumable.

Scenes are addressed through the index's key → (shard, offset) table, so a loader reads exactly
the scenes it is given, in any order, from any storage format. Training draws an endless stream of
epochs; each epoch is one seeded permutation of the whole split, cut into equal per-rank slices
(padded by wrapping around), so every rank gets the same number of samples, none starves or waits
at the end of an epoch, and the stream is the same whatever the number of DataLoader workers.
Every sample also gets its own seed, which drives the random parts of its transform (view choice,
target-ray sampling), so a run resumed at step N sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from objdisc.data import storage
from objdisc.data.schema import Scene
from objdisc.data.storage import StorageError

Transform = Callable[[Scene, torch.Generator | None], dict[str, Any]]
REINDEX = "re-run `objdisc index` (or `dvc repro`) after changing shards"

# Shards whose sha256 this process has checked: resolved path -> (size, mtime_ns, sha256) of the
# file as hashed. A second dataset over the same shards (val, evaluation after training, a new
# loader in the same run) finds them here and hashes nothing.
_HASHED: dict[str, tuple[int, int, str]] = {}


def _entries(index: dict, split: str) -> list[tuple[str, int, str]]:
    if split not in index.get("keys", {}):
        raise KeyError(f"index has no split '{split}' (have {sorted(index.get('keys', {}))})")
    return sorted((shard, int(offset), key) for key, (shard, offset) in index["keys"][split].items())


def split_locations(index: dict, split: str) -> list[tuple[str, int]]:
    """(shard name, offset) of every scene of ``split``, in storage order."""
    return [(shard, offset) for shard, offset, _ in _entries(index, split)]


class SceneDataset(Dataset):
    """Map-style dataset of one split; items are ``(position, seed)`` pairs from the samplers.

    The shards are checked against the index (``verify``, on by default), so a shard changed or
    replaced after indexing is never trained on:

    * at construction, in the main process and before any DataLoader worker starts, every shard of
      the split is compared with the index: its size always, and its sha256 unless this process
      already hashed the file with the same size and mtime (``_HASHED``). A mismatch raises a
      one-line ``StorageError`` naming the shard and saying to re-index.
    * the (size, mtime) of each checked shard travels with the dataset into the workers (forked or
      pickled); before each read a worker only ``stat``s the shard (about a microsecond) and hashes
      it again only if its size or mtime changed since.

    So a run hashes each shard once (once per process under DDP), at the cost of reading the
    split's shards once at start-up (the sha256 of a file runs at about the speed of reading it),
    plus one ``stat`` per scene read. A read that fails to decode raises a ``StorageError`` naming
    the shard and the scene's key.

    ``cache_mb`` keeps decoded scenes in memory, up to that many MiB of arrays, so every epoch
    after the first decodes nothing: a small dataset trained for many epochs (the default's 1,000
    scenes, 48 epochs) otherwise spends most of its loading time decoding the same PNGs again,
    every view of them although a 2D model uses one. Scenes are kept in the order first read
    until the budget is full; the rest are read from the shards each time. Every process that
    reads (the main one, and each DataLoader worker: persistent workers keep theirs across epochs)
    holds its own cache, so ``cache_mb`` is per process. A cached scene was checked against the
    index when it was read, and is handed out as a copy: a transform may modify what it gets.
    """

    def __init__(
        self,
        shards_dir: str | Path,
        index: dict,
        split: str,
        transform: Transform,
        verify: bool = True,
        cache_mb: float = 0,
    ) -> None:
        self.shards_dir = Path(shards_dir)
        entries = _entries(index, split)
        self.locations = [(shard, offset) for shard, offset, _ in entries]
        self.keys = [key for _, _, key in entries]
        self.split = split
        self.transform = transform
        self.verify = verify
        if not self.locations:
            raise ValueError(f"split '{split}' of {self.shards_dir} has no scenes")
        self.expected: dict[str, tuple[int, str]] = {}
        for info in index.get("splits", {}).get(split, {}).get("shards", []):
            self.expected[info["path"]] = (int(info["bytes"]), str(info["sha256"]))
        self._checked: dict[str, tuple[int, int]] = {}  # shard -> (size, mtime_ns) when last verified
        if cache_mb < 0:
            raise ValueError(f"cache_mb must be >= 0, got {cache_mb}")
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: dict[int, Scene] = {}
        self._cached_bytes = 0
        if verify:
            for shard in sorted({shard for shard, _ in self.locations}):
                self.check_shard(shard)

    def check_shard(self, shard: str) -> None:
        """Compare one shard with the index (see the class docstring); raise ``StorageError``."""
        path = self.shards_dir / shard
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise StorageError(f"{path}: shard of split '{self.split}' is missing; {REINDEX}") from None
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._checked.get(shard) == stamp:
            return
        if shard not in self.expected:
            raise StorageError(f"{path}: the index lists no size or sha256 for this shard; {REINDEX}")
        size, sha256 = self.expected[shard]
        if stat.st_size != size:
            raise StorageError(f"{path}: {stat.st_size} bytes, the index says {size}: changed after indexing; {REINDEX}")
        key = str(path.resolve())
        if _HASHED.get(key) != (*stamp, sha256):
            if storage.sha256_file(path) != sha256:
                raise StorageError(f"{path}: sha256 differs from the index: changed after indexing; {REINDEX}")
            _HASHED[key] = (*stamp, sha256)
        self._checked[shard] = stamp

    def __len__(self) -> int:
        return len(self.locations)

    def scene(self, position: int) -> Scene:
        cached = self._cache.get(position)
        if cached is not None:
            return copy.deepcopy(cached)
        scene = self.read(position)
        size = sum(v.nbytes for v in scene.values() if isinstance(v, np.ndarray))
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[position] = copy.deepcopy(scene)
            self._cached_bytes += size
        return scene

    def read(self, position: int) -> Scene:
        """Scene ``position`` decoded from its shard (checked against the index first)."""
        shard, offset = self.locations[position]
        key = self.keys[position]
        path = self.shards_dir / shard
        if self.verify:
            self.check_shard(shard)
        try:
            return storage.read_scene(path, offset)
        except StorageError as err:
            text = str(err)
            raise StorageError(text if f"'{key}'" in text else f"{text} (scene '{key}')") from None
        except MemoryError:
            raise
        except Exception as err:  # a decoder's own error type (zlib, h5py, zarr, ...) from a damaged shard
            raise StorageError(f"{path}: scene '{key}' at offset {offset} does not decode: {type(err).__name__}: {err}") from None

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, Any]:
        position, seed = item if isinstance(item, tuple) else (item, None)
        generator = None
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        sample = self.transform(self.scene(position), generator)
        sample["index"] = position
        return sample


class TrainSampler(Sampler):
    """Endless seeded epochs, split evenly over ranks; ``start`` skips samples already consumed."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start
        self.per_rank = -(-size // world_size)  # ceil: pad by wrapping so every rank gets the same count

    def epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        padded = list(itertools.islice(itertools.cycle(order), self.per_rank * self.world_size))
        return padded[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = divmod(self.start, self.per_rank)
        for e in itertools.count(epoch):
            order = self.epoch_order(e)
            for i in range(skip, len(order)):
                # A per-sample seed that depends on (seed, epoch, rank, slot) only.
                yield order[i], (self.seed * 7_919 + e * 104_729 + self.rank) * 1_000_033 + i
            skip = 0

    def __len__(self) -> int:  # an endless sampler; DataLoader only needs this for len(loader)
        return 2**62


class EvalSampler(Sampler):
    """Positions ``rank, rank + world, ...`` of the first ``limit`` scenes, in order, fixed seeds."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, limit: int = 0, seed: int = 0) -> None:
        n = min(size, limit) if limit else size
        self.positions = list(range(rank, n, world_size))
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter((p, self.seed * 1_000_003 + p) for p in self.positions)

    def __len__(self) -> int:
        return len(self.positions)


def make_loader(
    dataset: SceneDataset,
    batch_size: int,
    sampler: Sampler,
    workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        # Its own generator: creating an iterator must not draw from the global RNG, whose state
        # the checkpoint restores (sample randomness comes from the sampler's per-sample seeds).
        generator=torch.Generator().manual_seed(0),
    )
