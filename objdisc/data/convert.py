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
without it is unfinished.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from objdisc.data import storage
from objdisc.data.schema import SchemaError, Scene, validate_scene
from objdisc.data.sources import Source, SourceError, get_source

MANIFEST = "convert.json"
PARTS = ".parts"  # per-shard records of finished shards (for resuming)


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
    """Convert ``input_path`` read by source ``source_name`` into shards under ``out``."""
    if fmt not in storage.FORMATS:
        raise ValueError(f"unknown storage format '{fmt}' (known: {', '.join(storage.FORMATS)})")
    options = dict(options or {})
    source_cls = get_source(source_name)
    source = source_cls(input_path, **options)
    counts = source.splits()
    if splits:
        missing = sorted(set(splits) - set(counts))
        if missing:
            raise SourceError(f"{source_name}: unknown split(s) {missing} (have {sorted(counts)})")
        counts = {s: counts[s] for s in splits}

    out = Path(out)
    settings = {
        "source": source_name,
        "input": str(input_path),
        "format": fmt,
        "options": options,
        "shard_scenes": shard_scenes,
        "splits": counts,
        "skip_bad": skip_bad,
    }
    _prepare(out, settings)
    jobs = plan(counts, shard_scenes)
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

    for job in jobs:
        record = done[job]
        split = result.splits.setdefault(job.split, {"scenes": 0, "shards": []})
        result.skipped.extend(record["skipped"])
        if record["shard"] is not None:
            split["scenes"] += record["shard"]["scenes"]
            split["shards"].append(record["shard"]["path"])
    manifest = {**settings, "written": result.splits, "skipped": result.skipped, "resumed_shards": result.resumed_shards}
    _write_json(out / MANIFEST, manifest)
    shutil.rmtree(out / PARTS, ignore_errors=True)
    return result


def _prepare(out: Path, settings: dict[str, Any]) -> None:
    """Keep finished shards only when they were made with the same settings."""
    marker = out / PARTS / "settings.json"
    if out.exists():
        same = marker.exists() and json.loads(marker.read_text()) == json.loads(json.dumps(settings))
        if not same:
            shutil.rmtree(out)
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    for tmp in out.glob("*.tmp-*"):  # leftovers of a killed writer
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink()
    _write_json(marker, settings)


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
    """Runs in ``workers`` processes. The first failure stops every worker at once (a shard being
    written stays a temp file, removed by the next attempt) and is raised here."""
    ctx = mp.get_context("spawn")  # fork is unsafe with TFDS/ArrayRecord and threads
    counter = ctx.Value("q", 0)
    done: dict[ShardJob, dict[str, Any]] = {}
    with ctx.Pool(min(workers, len(work)), initializer=_init_worker, initargs=(source, counter)) as pool:
        pending = [pool.apply_async(_run_in_worker, (run, out, fmt, skip_bad)) for run in work]
        seen = 0
        while pending:
            time.sleep(0.2)
            for result in [r for r in pending if r.ready()]:
                pending.remove(result)
                done.update(result.get())  # re-raises the worker's error; leaving `with` kills the rest
            now = counter.value
            bar.update(now - seen)
            seen = now
    return done


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)
