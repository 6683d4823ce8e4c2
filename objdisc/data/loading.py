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

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from objdisc.data import storage
from objdisc.data.schema import Scene

Transform = Callable[[Scene, torch.Generator | None], dict[str, Any]]


def split_locations(index: dict, split: str) -> list[tuple[str, int]]:
    """(shard name, offset) of every scene of ``split``, in storage order."""
    if split not in index.get("keys", {}):
        raise KeyError(f"index has no split '{split}' (have {sorted(index.get('keys', {}))})")
    return sorted((shard, int(offset)) for shard, offset in index["keys"][split].values())


class SceneDataset(Dataset):
    """Map-style dataset of one split; items are ``(position, seed)`` pairs from the samplers."""

    def __init__(self, shards_dir: str | Path, index: dict, split: str, transform: Transform) -> None:
        self.shards_dir = Path(shards_dir)
        self.locations = split_locations(index, split)
        self.transform = transform
        if not self.locations:
            raise ValueError(f"split '{split}' of {self.shards_dir} has no scenes")

    def __len__(self) -> int:
        return len(self.locations)

    def scene(self, position: int) -> Scene:
        shard, offset = self.locations[position]
        return storage.read_scene(self.shards_dir / shard, offset)

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
