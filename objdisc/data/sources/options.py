"""Options shared by the sources: split tables, the object-count filter, unknown-option checks.

Option ``splits`` (every source that has a split table takes it) maps a split name to a range of
record (scene) numbers of the input, in one of these forms::

    splits: {train: [0, 60000], val: [60000, 75000], test: [75000, null]}   # record numbers
    splits: {train: [0.0, 0.8], val: [0.8, 0.9], test: [0.9, 1.0]}          # fractions
    splits: {test: [70000, null, 320]}                                       # [start, stop, limit]
    splits: {train: {start: 0, stop: 100, limit: 50}}                        # the same as a mapping

* Integers are record numbers, ``[start, stop)``; stop ``null`` (None) means the end of the data.
* A range whose start or stop is written as a float (``0.0``, ``0.8``, ``1.0``) is a pair of
  fractions in [0, 1] of the records: ``[a, b]`` is ``[round(a·N), round(b·N))`` for N records, so
  neighbouring splits that share a boundary fraction share the boundary record and the table
  follows the size of the data. ``[0, 0.8]`` is a fraction too (one float makes both fractions).
* ``limit`` keeps at most that many scenes of the range (after the source's own filters such as
  ``max_objects``).

A range given in the ``splits`` option that reaches past the end of the data is an error naming
the option key (``splits.val``), the range and the number of scenes available: nothing is cut
silently. A source's built-in default table is cut at the end of a shorter input only where the
source documents it (and the converter then warns about each default split that comes out empty).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from objdisc.data.sources.base import SourceError


def _is_float(value: Any) -> bool:
    return isinstance(value, float | np.floating)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def fraction_index(fraction: float, total: int) -> int:
    """Record number at ``fraction`` of ``total`` records, rounded half up (both neighbours of a
    boundary use this, so splits that share a fraction never overlap nor leave a gap)."""
    return min(total, max(0, math.floor(fraction * total + 0.5)))


@dataclass(frozen=True)
class SplitRange:
    """Record numbers [start, stop) (stop None = end of the data), at most ``limit`` scenes kept.

    With ``fraction`` set, start and stop are fractions of the record count. ``option`` is the key
    of a range the user gave (``splits.val``) and ``where`` the source; a user range past the end
    of the data is an error, a built-in one (``option`` None) is cut at the end.
    """

    start: int | float
    stop: int | float | None = None
    limit: int | None = None
    fraction: bool = False
    option: str | None = field(default=None, compare=False)
    where: str = field(default="", compare=False)

    def describe(self) -> str:
        parts = [self.start, self.stop] + ([self.limit] if self.limit is not None else [])
        return "[" + ", ".join("null" if p is None else str(p) for p in parts) + "]"

    def bounds(self, total: int, exact: bool = True) -> tuple[int, int]:
        """``(start, stop)`` record numbers in data of ``total`` records.

        ``exact=False`` says ``total`` is only a lower bound (a damaged file whose readable part
        ends early): a user range is then cut like a built-in one, and reading the records past
        the damage reports it.
        """
        if self.fraction:
            start = fraction_index(float(self.start), total)
            stop = total if self.stop is None else fraction_index(float(self.stop), total)
            return start, max(start, stop)
        start = int(self.start)
        stop = total if self.stop is None else int(self.stop)
        if self.option is not None and exact and max(start, stop) > total:
            raise SourceError(
                f"{self.where}: option {self.option} = {self.describe()} is past the end of the data: "
                f"{total} scenes available (use record numbers up to {total}, or fractions such as [0.8, 1.0])"
            )
        stop = min(stop, total)
        return min(start, stop), stop

    def members(
        self, total: int, objects: np.ndarray | None, max_objects: int | None, exact: bool = True
    ) -> Sequence[int]:
        """Record numbers of this split in data of ``total`` records; ``objects`` (visible objects
        per record) is needed only with ``max_objects``."""
        start, stop = self.bounds(total, exact)
        members: Sequence[int]
        if max_objects is None:
            members = range(start, stop)
        else:
            assert objects is not None
            members = np.flatnonzero(np.asarray(objects[start:stop]) <= max_objects) + start
        return members if self.limit is None else members[: self.limit]


def _split_range(name: str, spec: Any, where: str) -> SplitRange:
    bad = SourceError(
        f"{where}: option splits.{name}: expected [start, stop] or [start, stop, limit] (record numbers, or "
        f"fractions in [0, 1] such as [0.0, 0.8]), got {spec!r}"
    )
    if isinstance(spec, Mapping):
        if "start" not in spec or set(spec) - {"start", "stop", "limit"}:
            raise bad
        values = [spec["start"], spec.get("stop"), spec.get("limit")]
    elif isinstance(spec, list | tuple) and 1 <= len(spec) <= 3:
        values = [*spec, None, None][:3]
    else:
        raise bad
    start, stop, limit = values
    if not (_is_int(start) or _is_float(start)) or not (stop is None or _is_int(stop) or _is_float(stop)):
        raise bad
    if limit is not None and not _is_int(limit):
        raise bad
    key = f"splits.{name}"
    fraction = _is_float(start) or _is_float(stop)
    if fraction:
        ends = [float(start)] + ([] if stop is None else [float(stop)])
        if not all(0.0 <= x <= 1.0 for x in ends):
            raise SourceError(
                f"{where}: option {key} = {list(spec) if not isinstance(spec, Mapping) else dict(spec)}: "
                "a fraction must lie in [0, 1] (record numbers are integers)"
            )
        start, stop = float(start), None if stop is None else float(stop)
    else:
        start, stop = int(start), None if stop is None else int(stop)
    if start < 0 or (stop is not None and stop < start) or (limit is not None and limit < 0):
        raise SourceError(f"{where}: option {key}: split '{name}' has a bad range {spec!r} (need 0 <= start <= stop)")
    return SplitRange(start, stop, None if limit is None else int(limit), fraction, key, where)


def parse_splits(value: Any, where: str) -> dict[str, SplitRange]:
    """Option ``splits``: {name: [start, stop] | [start, stop, limit] | {start, stop, limit}}, record
    numbers or fractions (see the module docstring); ``where`` (the source name) starts errors."""
    if not isinstance(value, Mapping) or not value:
        raise SourceError(f"{where}: option 'splits' must be a non-empty mapping name -> [start, stop]")
    return {str(name): _split_range(str(name), spec, where) for name, spec in value.items()}


def parse_max_objects(value: Any, where: str) -> int | None:
    if value is None:
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if count < 0 or count != value:
        raise SourceError(f"{where}: option 'max_objects' must be a non-negative integer, got {value!r}")
    return count


def check_options(options: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SourceError(f"{where}: unknown option(s) {unknown} (allowed: {sorted(allowed)})")


__all__ = ["SplitRange", "check_options", "fraction_index", "parse_max_objects", "parse_splits"]
