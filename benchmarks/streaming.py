"""Conversion memory and speed as the input grows: Tetrominoes TFRecords of 1k to 100k scenes.

The converter streams: each worker holds one scene and one open shard at a time, and the main
process keeps only per-shard records, so peak memory must not grow with the number of scenes, and
scenes/s must not fall (each worker reads its run of shards in one pass; a reader per shard would
make the time quadratic in the file length). For each ``--scenes`` count this writes a
Tetrominoes fixture in the published format (``fixtures.py``: one GZIP TFRecord of
``tf.train.Example`` records, 35×35, 4 entity masks; cached under ``--work``) and converts it
to WebDataset with ``--workers`` processes in a fresh child process, recording:

* ``scenes_per_s`` and ``seconds`` (the whole call), ``count_s`` (opening the file and counting
  its records: one pass);
* ``peak_tree_rss_mib`` (main process + workers, sampled every 20 ms) and ``peak_rss_mib`` (the
  main process alone).

    python benchmarks/streaming.py                               # 1k, 10k, 100k scenes, 2 workers
    python benchmarks/streaming.py --scenes 1000,20000 --workers 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _common import ROOT, TreeRSS, machine_info, peak_rss_mib, write_json


def task_fixture(task: dict[str, Any]) -> dict[str, Any]:
    from fixtures import ensure_fixture

    folder, info = ensure_fixture("tetrominoes", Path(task["work"]), task["scenes"], task["seed"])
    return {"path": str(folder), **info}


def task_convert(task: dict[str, Any]) -> dict[str, Any]:
    from objdisc.data.convert import convert
    from objdisc.data.sources import get_source

    out = Path(task["out"])
    shutil.rmtree(out, ignore_errors=True)
    options = {"splits": {"train": [0, None]}}  # every record, one split
    with TreeRSS() as tree:
        t0 = time.perf_counter()
        get_source("tetrominoes")(task["input"], **options).splits()  # counted once, then cached
        count_s = time.perf_counter() - t0
        result = convert("tetrominoes", task["input"], out, options=options, shard_scenes=task["shard_scenes"],
                         workers=task["workers"], progress=False)
        seconds = time.perf_counter() - t0
    scenes = result.splits["train"]["scenes"]
    record = {
        "scenes": scenes,
        "workers": task["workers"],
        "shards": len(result.splits["train"]["shards"]),
        "seconds": round(seconds, 3),
        "count_s": round(count_s, 3),
        "scenes_per_s": round(scenes / seconds, 2),
        "peak_rss_mib": peak_rss_mib(),
        "peak_tree_rss_mib": tree.peak_mib,
    }
    shutil.rmtree(out, ignore_errors=True)
    return record


TASKS = {"fixture": task_fixture, "convert": task_convert}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", default="1000,10000,100000", help="comma list of input sizes")
    p.add_argument("--workers", type=int, default=2, help="conversion worker processes")
    p.add_argument("--shard-scenes", type=int, default=200, help="scenes per shard (params.yaml storage.shard_scenes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "objdisc-bench"),
                   help="folder for the cached fixtures and the (deleted) shards")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "streaming.json"), help="result JSON")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per measurement")
    p.add_argument("--tiny", action="store_true", help="smoke-test size: 16 and 48 scenes, shards of 4")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.scenes, args.shard_scenes = "16,48", 4
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child is not None:
        task = json.loads(args.child)
        write_json(args.child_out, TASKS[task["kind"]](task))
        return {}
    work = Path(args.work).resolve()
    report: dict[str, Any] = {
        "benchmark": "streaming",
        "machine": machine_info(),
        "settings": {"workers": args.workers, "shard_scenes": args.shard_scenes, "seed": args.seed,
                     "format": "webdataset", "source": "tetrominoes"},
        "runs": [],
    }
    for scenes in [int(x) for x in args.scenes.split(",") if x.strip()]:
        print(f"[streaming] {scenes} scenes: fixture ...", file=sys.stderr, flush=True)
        fixture = _common.run_child(__file__, {"kind": "fixture", "work": str(work), "scenes": scenes,
                                               "seed": args.seed}, args.timeout)
        entry: dict[str, Any] = {"scenes": scenes, "fixture": fixture}
        if "error" not in fixture:
            print(f"[streaming] {scenes} scenes: convert ...", file=sys.stderr, flush=True)
            entry["convert"] = _common.run_child(__file__, {
                "kind": "convert", "input": fixture["path"], "out": str(work / "shards" / f"streaming-{scenes}"),
                "workers": args.workers, "shard_scenes": args.shard_scenes,
            }, args.timeout)
            shown = entry["convert"].get("error") or (
                f"{entry['convert']['scenes_per_s']} scenes/s, peak {entry['convert']['peak_tree_rss_mib']} MiB")
            print(f"[streaming]   {shown}", file=sys.stderr, flush=True)
        report["runs"].append(entry)
        write_json(args.out, report)  # after every size: a long run leaves what it measured
    return report


if __name__ == "__main__":
    main()
