"""Original files → canonical shards, in parallel, streaming and resumable.

Each split is cut into shards of ``shard_scenes`` consecutive scenes (``plan``). The unfinished
shards are grouped into runs of consecutive shards, about ``workers`` runs per split (``runs``);
each worker process reads a whole run with ONE pass of the source and writes its shards one after
another, each atomically by the storage layer, so memory stays flat. One pass per run matters for
sequential files: reaching record k of a gzip TFRecord means decompressing records 0..k-1, so
starting a reader per shard would cost time quadratic in the file length; a run pays that skip
once. The worker processes get the source the main process opened (pickled), with what it learned
while counting scenes, so no worker counts a file again.

Every finished shard leaves a record in ``.parts/``: an interrupted conversion, run again with the
same parameters, skips the shards already on disk. ``convert.json`` is written last: a folder
without it is unfinished. It records the settings and every shard's size and sha256, so running a
finished conversion again with the same settings returns at once (every shard counted as resumed,
``up_to_date`` set, nothing rewritten) when its shards are all there with their recorded sizes,
and otherwise redoes only the shards that are missing or changed.

The output folder is only ever written when it is new, empty, or a conversion folder of ours
(``convert.json`` or ``.parts/settings.json`` present); anything else is refused, as is an output
that is the input, lies inside it or contains it. When the settings of a folder of ours changed,
only what the converter makes is removed: shards named ``<split>-NNNNNN.<suffix>``, ``.parts/``,
``convert.json`` and the temporaries of writers that no longer run (``objdisc.io``); any other
file there (an ``index.json``, notes) is left alone.

A split the input yields no scene for is an error when it was asked for (option ``splits`` or
``splits=``) or when every split is empty (an empty file, say); an empty split of a source's
built-in table (data shorter than the table) is left out with a warning.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from objdisc.data import storage
from objdisc.data.schema import SchemaError, Scene, validate_scene
from objdisc.data.sources import Source, SourceError, get_source
from objdisc.data.workers import spawn_pool
from objdisc.io import remove_stale_temps, write_json

MANIFEST = "convert.json"
PARTS = ".parts"  # per-shard records of finished shards (for resuming)
SETTINGS = "settings.json"  # in PARTS: the settings the records belong to


class ConvertError(ValueError):
    """The output folder cannot be used; the message names it and says why (one line)."""


@dataclass(frozen=True)
class ShardJob:
    split: str
    shard: int
    start: int
    stop: int


@dataclass(frozen=True)
class Run:
    """Consecutive shards of one split, converted by one worker reading the source once."""

    jobs: tuple[ShardJob, ...]

    @property
    def split(self) -> str:
        return self.jobs[0].split

    @property
    def start(self) -> int:
        return self.jobs[0].start

    @property
    def stop(self) -> int:
        return self.jobs[-1].stop

    @property
    def scenes(self) -> int:
        return self.stop - self.start


@dataclass
class ConvertResult:
    out: str
    format: str
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    resumed_shards: int = 0
    up_to_date: bool = False  # the folder already held this finished conversion; nothing was written


def plan(counts: dict[str, int], shard_scenes: int) -> list[ShardJob]:
    jobs = []
    for split, n in counts.items():
        for shard in range(math.ceil(n / shard_scenes)):
            jobs.append(ShardJob(split, shard, shard * shard_scenes, min(n, (shard + 1) * shard_scenes)))
    return jobs


def runs(todo: list[ShardJob], workers: int) -> list[Run]:
    """Group the unfinished shards (in ``plan`` order) into runs, largest first.

    A run never spans a split or a gap left by finished shards. Each split gets about ``workers``
    runs, so all workers stay busy on one large split, and no more: every extra run of a sequential
    source costs one more skip from the start of the file to the run's first record.
    """
    blocks: dict[str, list[list[ShardJob]]] = {}
    for job in todo:
        split = blocks.setdefault(job.split, [])
        if split and split[-1][-1].shard + 1 == job.shard:
            split[-1].append(job)
        else:
            split.append([job])
    out = []
    for split in blocks.values():
        total = sum(len(block) for block in split)
        for block in split:
            pieces = max(1, min(len(block), round(workers * len(block) / total)))
            size, extra = divmod(len(block), pieces)
            first = 0
            for piece in range(pieces):
                last = first + size + (piece < extra)
                out.append(Run(tuple(block[first:last])))
                first = last
    return sorted(out, key=lambda run: -run.scenes)  # longest first: the last run to finish is short


def convert(
    source_name: str,
    input_path: str | Path,
    out: str | Path,
    *,
    fmt: str = "webdataset",
    options: dict[str, Any] | None = None,
    shard_scenes: int = 256,
    workers: int = 1,
    splits: list[str] | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> ConvertResult:
    """Convert ``input_path`` read by source ``source_name`` into shards under ``out``.

    Raises ``ConvertError`` for an output folder it must not write (see the module docstring) and
    ``SourceError`` for a split that is asked for but holds no scene.
    """
    if fmt not in storage.FORMATS:
        raise ValueError(f"unknown storage format '{fmt}' (known: {', '.join(storage.FORMATS)})")
    options = dict(options or {})
    out = Path(out)
    source_cls = get_source(source_name)
    # Both checks come before the source counts anything (minutes on large files).
    _check_paths(Path(input_path), out)
    _check_output(out)
    source = source_cls(input_path, **options)
    counts = source.splits()
    if splits:
        missing = sorted(set(splits) - set(counts))
        if missing:
            raise SourceError(f"{source_name}: unknown split(s) {missing} (have {sorted(counts)})")
        counts = {s: counts[s] for s in splits}
    asked = set(splits or [])
    if isinstance(options.get("splits"), Mapping):
        asked |= {str(name) for name in options["splits"]}
    counts = _check_counts(source_name, input_path, counts, asked)

    settings = {
        "source": source_name,
        "input": str(input_path),
        "format": fmt,
        "options": options,
        "shard_scenes": shard_scenes,
        "splits": counts,
        "skip_bad": skip_bad,
    }
    jobs = plan(counts, shard_scenes)
    finished = _prepare(out, settings, jobs, fmt)
    if finished is not None:
        kept = sum(len(block["shards"]) for block in finished["written"].values())
        return ConvertResult(
            out=str(out), format=fmt, splits=finished["written"], skipped=finished["skipped"],
            resumed_shards=kept, up_to_date=True,
        )
    result = ConvertResult(out=str(out), format=fmt)
    done: dict[ShardJob, dict[str, Any]] = {}
    todo = []
    for job in jobs:
        record = _finished(out, job, fmt)
        if record is not None:
            done[job] = record
        else:
            todo.append(job)
    result.resumed_shards = len(done)

    total = sum(j.stop - j.start for j in jobs)
    bar = tqdm(total=total, unit="scene", desc=f"convert {source_name}", disable=not progress)
    bar.update(sum(job.stop - job.start for job in done))
    work = runs(todo, max(workers, 1))
    if workers <= 1 or len(work) <= 1:
        for run in work:
            done.update(_convert_run(source, run, str(out), fmt, skip_bad, lambda: bar.update(1)))
    else:
        done.update(_convert_in_pool(source, work, str(out), fmt, skip_bad, workers, bar))
    bar.close()

    shards: dict[str, dict[str, Any]] = {}
    for job in jobs:
        record = done[job]
        split = result.splits.setdefault(job.split, {"scenes": 0, "shards": []})
        result.skipped.extend(record["skipped"])
        if record["shard"] is not None:
            split["scenes"] += record["shard"]["scenes"]
            split["shards"].append(record["shard"]["path"])
            shards[record["shard"]["path"]] = {k: record["shard"][k] for k in ("scenes", "bytes", "sha256")}
    manifest = {
        **settings,
        "written": result.splits,
        "shards": shards,  # name -> scenes, bytes, sha256: lets a re-run see the folder is complete
        "skipped": result.skipped,
        "resumed_shards": result.resumed_shards,
    }
    _write_json(out / MANIFEST, manifest)
    shutil.rmtree(out / PARTS, ignore_errors=True)
    return result


def _check_paths(input_path: Path, out: Path) -> None:
    """The output must neither be the input, nor lie inside it, nor contain it: the converter
    removes its own files from the output, and those must never be (or hide among) the raw data."""
    source, target = input_path.resolve(), out.resolve()
    if target == source or target.is_relative_to(source):
        raise ConvertError(
            f"{out}: the output folder is the input {input_path} or lies inside it; choose a folder outside the input"
        )
    if source.is_relative_to(target):
        raise ConvertError(
            f"{out}: the output folder contains the input {input_path}; choose a folder that does not hold the raw data"
        )


def _read_settings(path: Path) -> dict[str, Any] | None:
    """A manifest or settings marker of ours, or None (absent, unreadable, or someone else's)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(data, dict) and {"source", "format", "shard_scenes", "splits"} <= set(data):
        return data
    return None


def _is_ours(out: Path) -> bool:
    if _read_settings(out / MANIFEST) is not None or _read_settings(out / PARTS / SETTINGS) is not None:
        return True
    # A run killed between creating .parts and writing its settings leaves only that folder.
    return [entry.name for entry in out.iterdir()] == [PARTS] and (out / PARTS).is_dir()


def _check_output(out: Path) -> None:
    """Refuse an output that exists and is not a new, empty or objdisc conversion folder: the
    converter removes shard-named files there, so it must never run in someone else's folder."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ConvertError(f"{out}: the output exists and is not a folder; choose a new or empty folder")
    if next(out.iterdir(), None) is None or _is_ours(out):
        return
    raise ConvertError(
        f"{out}: the output folder is not empty and is not an objdisc conversion (no {MANIFEST} or "
        f"{PARTS}/{SETTINGS}); nothing was changed: choose a new or empty folder"
    )


def _check_counts(source_name: str, input_path: str | Path, counts: dict[str, int], asked: set[str]) -> dict[str, int]:
    """An input that yields nothing for a split that is asked for is an error, and so is an input
    that yields nothing at all; an empty split of the source's own table is left out with a warning."""
    empty = [split for split, n in counts.items() if n == 0]
    if not counts or len(empty) == len(counts):
        names = ", ".join(empty) or "none"
        raise SourceError(
            f"{source_name}: {input_path} yields no scene for split(s) {names}: the input is empty or nothing "
            "in it falls in the split ranges and filters"
        )
    for split in empty:
        if split in asked:
            raise SourceError(f"{source_name}: split '{split}' has no scene in {input_path} (asked for, so it must not be empty)")
        warnings.warn(
            f"{source_name}: split '{split}' of the source's default table has no scene in {input_path} "
            "(the data is shorter than the table); it is left out",
            stacklevel=3,
        )
    return counts


def _same_settings(recorded: dict[str, Any], settings: dict[str, Any]) -> bool:
    wanted = json.loads(json.dumps(settings, sort_keys=True))
    return {key: recorded.get(key) for key in wanted} == wanted


def _manifest_records(out: Path, manifest: dict[str, Any], jobs: list[ShardJob], fmt: str) -> dict[ShardJob, dict[str, Any]]:
    """The parts records of a finished conversion's jobs whose shard is on disk with its recorded
    size (a size check only: cheap, and DVC or the index guard the contents)."""
    shards = manifest.get("shards")
    if not isinstance(shards, dict):
        return {}  # a manifest from before shard sizes were recorded: nothing can be vouched for
    records = {}
    for job in jobs:
        name = storage.shard_name(job.split, job.shard, fmt)
        skipped = [
            s for s in manifest.get("skipped", [])
            if s.get("split") == job.split and job.start <= s.get("position", -1) < job.stop
        ]
        info = shards.get(name)
        if info is None:
            if len(skipped) == job.stop - job.start:  # every scene skipped: the job wrote no shard
                records[job] = {"shard": None, "skipped": skipped}
            continue
        path = out / name
        if path.is_file() and not path.is_symlink() and path.stat().st_size == info.get("bytes"):
            records[job] = {"shard": {"path": name, **info}, "skipped": skipped}
    return records


def _remove_outputs(out: Path) -> None:
    """Remove what a conversion makes (shards, .parts, the manifest), nothing else."""
    for entry in out.iterdir():
        if storage.parse_shard_name(entry.name) is not None and entry.is_file() and not entry.is_symlink():
            entry.unlink()
    shutil.rmtree(out / PARTS, ignore_errors=True)
    (out / MANIFEST).unlink(missing_ok=True)


def _prepare(out: Path, settings: dict[str, Any], jobs: list[ShardJob], fmt: str) -> dict[str, Any] | None:
    """Make ``out`` ready for ``jobs``; return the manifest when it already holds this finished
    conversion intact (then nothing is written), else None.

    Finished shards are kept only when they were made with the same settings: from the ``.parts``
    records of an interrupted run, or from the manifest of a finished one (whose intact shards
    become ``.parts`` records again, so only missing or changed shards are redone).
    """
    marker = out / PARTS / SETTINGS
    # Temporaries of killed writers only: a live writer's file (another process) is never touched.
    remove_stale_temps(out)
    remove_stale_temps(out / PARTS)
    manifest = _read_settings(out / MANIFEST)
    kept: dict[ShardJob, dict[str, Any]] = {}
    if manifest is not None and _same_settings(manifest, settings):
        kept = _manifest_records(out, manifest, jobs, fmt)
        if len(kept) == len(jobs):
            return manifest
    recorded = _read_settings(marker)
    if kept:
        shutil.rmtree(out / PARTS, ignore_errors=True)  # the records come from the manifest now
    elif out.exists() and not (recorded is not None and _same_settings(recorded, settings)):
        _remove_outputs(out)
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    _write_json(marker, settings)
    for job, record in kept.items():
        _write_json(_part_path(out, job), record)
    return None


def _part_path(out: Path, job: ShardJob) -> Path:
    return out / PARTS / f"{job.split}-{job.shard:06d}.json"


def _finished(out: Path, job: ShardJob, fmt: str) -> dict[str, Any] | None:
    part = _part_path(out, job)
    if not part.exists():
        return None
    record = json.loads(part.read_text())
    if record["shard"] is not None and not (out / record["shard"]["path"]).exists():
        return None
    return record


def _scenes(
    source: Source, split: str, start: int, stop: int, skip_bad: bool, skipped: list, tick: Callable[[], None]
) -> Iterator[tuple[int, Scene]]:
    """``(position, scene)`` for positions ``start..stop-1`` from one reader of the source. With
    ``skip_bad`` a bad scene is recorded and the reader restarts after it."""
    position = start
    while position < stop:
        try:
            for scene in source.read(split, position, stop):
                validate_scene(scene, where=f"{source.info.name} {split} scene {position}")
                tick()
                yield position, scene
                position += 1
            return
        except (SourceError, SchemaError) as err:
            if not skip_bad:
                raise
            skipped.append({"split": split, "position": position, "error": str(err)})
            tick()
            position += 1


def _convert_run(
    source: Source, run: Run, out: str, fmt: str, skip_bad: bool, tick: Callable[[], None]
) -> dict[ShardJob, dict[str, Any]]:
    """Write the run's shards in order from one pass over its source range; each finished shard
    leaves its ``.parts`` record at once, so a kill loses at most the shard being written."""
    skipped: list[dict[str, Any]] = []
    scenes = _scenes(source, run.split, run.start, run.stop, skip_bad, skipped, tick)
    ahead = next(scenes, None)  # the next (position, scene); it tells where a shard ends
    records = {}
    for job in run.jobs:

        def in_shard() -> Iterator[Scene]:
            nonlocal ahead
            while ahead is not None and ahead[0] < job.stop:
                yield ahead[1]
                ahead = next(scenes, None)

        shard = None
        if ahead is not None and ahead[0] < job.stop:
            path = Path(out) / storage.shard_name(job.split, job.shard, fmt)
            info = storage.write_shard(path, in_shard(), fmt)
            shard = {"path": path.name, "scenes": info.scenes, "bytes": info.bytes, "sha256": info.sha256}
        # Skips are found in position order, so all of this shard's are known once ``ahead`` has
        # passed its end (or the run is over).
        mine = [s for s in skipped if job.start <= s["position"] < job.stop]
        records[job] = {"shard": shard, "skipped": mine}
        _write_json(_part_path(Path(out), job), records[job])
    return records


# Worker processes: the opened source and the shared count of scenes done (for the progress bar)
# arrive once, through the pool's initializer.
_worker: dict[str, Any] = {}


def _init_worker(source: Source, counter: Any) -> None:
    _worker.update(source=source, counter=counter)


def _tick_shared() -> None:
    counter = _worker["counter"]
    with counter.get_lock():
        counter.value += 1


def _run_in_worker(run: Run, out: str, fmt: str, skip_bad: bool) -> dict[ShardJob, dict[str, Any]]:
    return _convert_run(_worker["source"], run, out, fmt, skip_bad, _tick_shared)


def _convert_in_pool(
    source: Source, work: list[Run], out: str, fmt: str, skip_bad: bool, workers: int, bar: tqdm
) -> dict[ShardJob, dict[str, Any]]:
    """Runs in ``workers`` spawned processes (``objdisc.data.workers``). The first failure stops
    every worker at once (a shard being written stays a temp file, removed by the next attempt)
    and is raised here."""
    counter = mp.get_context("spawn").Value("q", 0)
    done: dict[ShardJob, dict[str, Any]] = {}
    with spawn_pool(min(workers, len(work)), "convert", _init_worker, (source, counter)) as pool:
        pending = {pool.submit(_run_in_worker, run, out, fmt, skip_bad) for run in work}
        seen = 0
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in finished:
                done.update(future.result())  # re-raises the worker's error; spawn_pool stops the rest
            now = counter.value
            bar.update(now - seen)
            seen = now
    return done


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj, sort_keys=True)
