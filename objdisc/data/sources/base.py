"""What every source module provides: a ``Source`` that turns original files into canonical scenes.

A source is opened on a root folder (``data/raw/<dataset>``); it reports its splits and their
scene counts, and yields canonical scenes for any half-open range ``[start, stop)`` of a split, so
the converter can hand disjoint ranges to worker processes. Everything a source does to match the
original loader (crops of masks to ids, axis fixes, split tables) happens inside its module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from objdisc.data.schema import Scene


class SourceError(ValueError):
    """Bad or missing input files; the message names the file (and record) at fault."""


@dataclass(frozen=True)
class SourceInfo:
    name: str  # the CLI name: `objdisc convert <name>`
    summary: str  # one line: what the dataset is
    layout: str  # the expected layout of data/raw/<name>, as shown by `convert --list`
    origin: str  # where the original files are published
    needs: str = ""  # extra requirement, e.g. "tf extra"


class Source(ABC):
    """Base class of every source. Subclasses set ``info`` and implement the three methods."""

    info: ClassVar[SourceInfo]

    def __init__(self, root: str | Path, **options: Any) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise SourceError(f"{self.info.name}: input folder {self.root} does not exist")
        self.options = options

    @abstractmethod
    def splits(self) -> dict[str, int]:
        """Split name → number of scenes (after the source's own filters)."""

    @abstractmethod
    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        """Yield the canonical scenes ``start..stop-1`` of ``split`` in order.

        Each scene has ``__key__`` = ``scene_key(source_index)`` and ``meta`` with at least
        ``source``, ``split``, ``index`` (the source index) and ``views`` (original view ids).
        Raise ``SourceError`` naming the file and record on bad input.
        """

    def check_split(self, split: str) -> int:
        counts = self.splits()
        if split not in counts:
            raise SourceError(f"{self.info.name}: unknown split '{split}' (have {sorted(counts)})")
        return counts[split]
