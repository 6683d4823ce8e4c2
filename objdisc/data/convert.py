"""Original files → canonical shards, in parallel, streaming and resumable.

Each split is cut into shards of ``shard_scenes`` consecutive scenes; every shard is an independent
job (source range ``[start, stop)``) run in a worker process and written atomically by the storage
layer, so memory stays flat and an interrupted conversion, run again with the same parameters,
skips the shards already on disk. ``convert.json`` is written last: a folder without it is
unfinished.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
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
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            done[job] = _convert_shard(source_cls, str(input_path), options, job, str(out), fmt, skip_bad)
            bar.update(job.stop - job.start)
    else:
        ctx = mp.get_context("spawn")  # fork is unsafe with TFDS/ArrayRecord and threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {
                pool.submit(_convert_shard, source_cls, str(input_path), options, job, str(out), fmt, skip_bad): job
                for job in todo
            }
            for future in as_completed(futures):
                job = futures[future]
                done[job] = future.result()
                bar.update(job.stop - job.start)
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


def _scenes(source: Source, job: ShardJob, skip_bad: bool, skipped: list) -> Iterator[Scene]:
    """The job's scenes in order; with ``skip_bad`` a bad scene is recorded and passed over."""
    position = job.start
    while position < job.stop:
        try:
            for scene in source.read(job.split, position, job.stop):
                validate_scene(scene, where=f"{source.info.name} {job.split} scene {position}")
                position += 1
                yield scene
            return
        except (SourceError, SchemaError) as err:
            if not skip_bad:
                raise
            skipped.append({"split": job.split, "position": position, "error": str(err)})
            position += 1


def _convert_shard(
    source_cls: type[Source], input_path: str, options: dict, job: ShardJob, out: str, fmt: str, skip_bad: bool
) -> dict[str, Any]:
    source = source_cls(input_path, **options)
    skipped: list[dict[str, Any]] = []
    path = Path(out) / storage.shard_name(job.split, job.shard, fmt)
    scenes = _scenes(source, job, skip_bad, skipped)
    first = next(scenes, None)
    shard = None
    if first is not None:
        info = storage.write_shard(path, _chain(first, scenes), fmt)
        shard = {"path": path.name, "scenes": info.scenes, "bytes": info.bytes, "sha256": info.sha256}
    record = {"shard": shard, "skipped": skipped}
    _write_json(_part_path(Path(out), job), record)
    return record


def _chain(first: Scene, rest: Iterator[Scene]) -> Iterator[Scene]:
    yield first
    yield from rest


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)
