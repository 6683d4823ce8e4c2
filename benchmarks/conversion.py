"""Conversion and loading throughput on CLEVR with masks and ClevrTex, with peak memory, as JSON.

For each dataset a fixture of ``--scenes`` scenes is written in the exact original format
(``benchmarks/fixtures.py``; cached under ``--work``) and then measured:

1. ``objdisc.data.convert.convert`` (original files → shards): scenes/s for every format in
   ``--formats`` and every worker count in ``--convert-workers`` (WebDataset with all of them,
   HDF5 and zarr with the largest only), plus the time to index the shards.
2. Loading for training: scenes/s of ``SceneDataset`` + ``make_loader`` with ``TrainSampler``
   (shuffled, batch ``--batch``) over the converted shards, for each format and each count in
   ``--loader-workers``, with the 2D transform of training (``objdisc.image_transform``,
   the dataset's crop from the root ``params.yaml``). The first batch (worker start-up) is timed
   apart from the steady state.
3. Reading the original files directly, one process, in file order, with the same transform:
   CLEVR through objdisc's TFRecord reader (``iter_records`` + ``parse_fixed``) and, when
   TensorFlow is installed, through the DeepMind reader (``tf.data.TFRecordDataset`` +
   ``parse_single_example`` + ``decode_raw``); ClevrTex with PIL (render, palette mask) + JSON per
   scene, as the reference loader reads it.

Every measurement runs in a fresh process (``_common.run_child``): its peak RSS is its own, and a
failure is recorded in the JSON instead of stopping the run. ``--tiny`` is the smoke-test size.

    python benchmarks/conversion.py                       # 2000 scenes per dataset
    python benchmarks/conversion.py --scenes 500 --formats webdataset
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _common import ROOT, TreeRSS, machine_info, peak_rss_mib, reset_peak_rss, rss_mib, write_json

DATASETS = ("clevr-with-masks", "clevrtex")
SPLIT = "train"  # the split the loaders read
TF_DATA_SCENES = 320  # tf.data parses a CLEVR record's million 1-byte strings slowly: a sample is enough


def source_options(dataset: str, scenes: int) -> dict[str, Any]:
    """Converter options: every fixture scene in one ``train`` split for CLEVR (its conventions cut
    the 100,000 records of the real file); ClevrTex keeps its own 10/10/80 % splits."""
    if dataset == "clevr-with-masks":
        return {"splits": {"train": [0, scenes]}}
    return {"variant": "full"}


def image_config(dataset: str) -> dict[str, Any]:
    """The dataset's 2D crop and size from the root params.yaml (what training uses)."""
    from objdisc.config import load_params

    params = load_params(ROOT / "params.yaml")
    return dataclasses.asdict(params.datasets[dataset].image)


# ----------------------------------------------------------------------------- measurements
# Each takes the task dict and returns a JSON-ready dict; they run in a child process.


def task_fixture(task: dict[str, Any]) -> dict[str, Any]:
    from fixtures import ensure_fixture

    folder, info = ensure_fixture(task["dataset"], Path(task["work"]), task["scenes"], task["seed"])
    return {"path": str(folder), **info}


def task_convert(task: dict[str, Any]) -> dict[str, Any]:
    from objdisc.data.convert import convert
    from objdisc.data.index import build_index
    from objdisc.data.sources import get_source

    out = Path(task["out"])
    shutil.rmtree(out, ignore_errors=True)  # a fresh conversion, never a resumed one
    with TreeRSS() as tree:
        t0 = time.perf_counter()
        # Opening the source and counting its scenes (for a gzip TFRecord, one pass over the whole
        # file) is timed apart; ``convert`` below finds the count cached, so the total is the same.
        get_source(task["source"])(task["input"], **task["options"]).splits()
        count_s = time.perf_counter() - t0
        result = convert(
            task["source"],
            task["input"],
            out,
            fmt=task["format"],
            options=task["options"],
            shard_scenes=task["shard_scenes"],
            workers=task["workers"],
            progress=False,
        )
        seconds = time.perf_counter() - t0
    scenes = sum(split["scenes"] for split in result.splits.values())
    shards = sorted(p for p in out.iterdir() if p.is_file() and p.name != "convert.json")
    record: dict[str, Any] = {
        "format": task["format"],
        "workers": task["workers"],
        "shard_scenes": task["shard_scenes"],
        "scenes": scenes,
        "shards": len(shards),
        "seconds": round(seconds, 3),
        "count_s": round(count_s, 3),
        "scenes_per_s": round(scenes / seconds, 2),
        "output_mib": round(sum(p.stat().st_size for p in shards) / 2**20, 1),
        "peak_rss_mib": peak_rss_mib(),
        "peak_tree_rss_mib": tree.peak_mib,
    }
    if task["index"]:
        manifest = json.loads((out / "convert.json").read_text())
        t0 = time.perf_counter()
        build_index(out, params=manifest, progress=False, out=out / "index.json")
        record["index_s"] = round(time.perf_counter() - t0, 3)
    else:
        shutil.rmtree(out, ignore_errors=True)  # only the kept conversion feeds the loaders
    return record


def task_loader(task: dict[str, Any]) -> dict[str, Any]:
    import torch

    from objdisc.config import ImageConfig
    from objdisc.models.family import image_transform
    from objdisc.data.index import load_index
    from objdisc.data.loading import SceneDataset, TrainSampler, make_loader

    shards = Path(task["shards"])
    index = load_index(shards / "index.json")
    transform = functools.partial(image_transform, cfg=ImageConfig(**task["image"]), train=True)
    rss_before = rss_mib()
    with TreeRSS() as tree:
        dataset = SceneDataset(shards, index, SPLIT, transform)
        sampler = TrainSampler(len(dataset), seed=0)
        loader = make_loader(dataset, task["batch"], sampler, workers=task["workers"], drop_last=True)
        t0 = time.perf_counter()
        batches = iter(loader)
        batch = next(batches)  # start-up: worker processes, first shard opens
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(task["batches"]):
            batch = next(batches)
        seconds = time.perf_counter() - t0
        del batches, loader  # shut the persistent workers down inside the sampled window
    scenes = task["batches"] * task["batch"]
    return {
        "format": index["format"],
        "workers": task["workers"],
        "batch": task["batch"],
        "batches": task["batches"],
        "image": list(batch["image"].shape[1:]),
        "split_scenes": len(dataset),
        "first_batch_s": round(first, 3),
        "seconds": round(seconds, 3),
        "scenes_per_s": round(scenes / seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "peak_tree_rss_mib": tree.peak_mib,
    }


def _clevr_scenes_objdisc(folder: Path, count: int):
    """CLEVR records → canonical scenes with objdisc's TFRecord reader, in file order."""
    from objdisc.data.sources.multi_object import CLEVR, scene_from_arrays
    from objdisc.data.tf_example import parse_fixed
    from objdisc.data.tfrecord import iter_records

    path = folder / CLEVR.file
    spec = CLEVR.features()
    for index, payload in enumerate(iter_records(path, "auto", stop=count)):
        where = f"{path}: record {index}"
        arrays = parse_fixed(payload, spec, where)
        yield scene_from_arrays(CLEVR, arrays, index=index, meta={"index": index}, where=where)


def _clevr_scenes_tf(folder: Path, count: int):
    """The same through the DeepMind reader's tf.data pipeline (parse_single_example + decode_raw)."""
    import tensorflow as tf

    from objdisc.data.sources.multi_object import CLEVR, scene_from_arrays

    features = {
        name: tf.io.FixedLenFeature(fixed.shape, tf.string if fixed.dtype == "uint8" else tf.float32)
        for name, fixed in CLEVR.features().items()
    }
    byte_features = [name for name, fixed in CLEVR.features().items() if fixed.dtype == "uint8"]

    def decode(proto):
        example = tf.io.parse_single_example(proto, features)
        for name in byte_features:
            example[name] = tf.squeeze(tf.io.decode_raw(example[name], tf.uint8), axis=-1)
        return example

    path = str(folder / CLEVR.file)
    dataset = tf.data.TFRecordDataset(path, compression_type="GZIP").take(count).map(decode)
    for index, arrays in enumerate(dataset.as_numpy_iterator()):
        yield scene_from_arrays(CLEVR, arrays, index=index, meta={"index": index}, where=f"{path}: record {index}")


def _clevrtex_scenes_pil(folder: Path, count: int):
    """ClevrTex as its reference loader reads it: PIL render (first 3 channels), palette indices,
    JSON metadata, per scene from the folder layout."""
    import numpy as np
    from PIL import Image

    base = folder / "clevrtex_full"
    for index in range(count):
        stem = base / str(index // 1000) / f"CLEVRTEX_full_{index:06d}"
        with Image.open(f"{stem}.png") as img:
            image = np.asarray(img.convert("RGB"))
        with Image.open(f"{stem}_flat.png") as flat:
            mask = np.array(flat, dtype=np.uint8)
        with open(f"{stem}.json") as f:
            meta = json.load(f)
        yield {"image": image[None], "mask": mask[None], "objects": meta["objects"]}


READERS = {
    "objdisc-tfrecord": _clevr_scenes_objdisc,
    "tf.data": _clevr_scenes_tf,
    "pil-json": _clevrtex_scenes_pil,
}


def task_direct(task: dict[str, Any]) -> dict[str, Any]:
    import torch

    from objdisc.config import ImageConfig
    from objdisc.models.family import image_transform

    cfg = ImageConfig(**task["image"])
    read = READERS[task["reader"]]
    rss_before = rss_mib()
    with TreeRSS() as tree:
        t0 = time.perf_counter()
        scenes = 0
        for scene in read(Path(task["input"]), task["count"]):
            sample = image_transform(scene, None, cfg=cfg, train=True)
            scenes += 1
        seconds = time.perf_counter() - t0
    return {
        "reader": task["reader"],
        "scenes": scenes,
        "image": list(sample["image"].shape),
        "seconds": round(seconds, 3),
        "scenes_per_s": round(scenes / seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "peak_tree_rss_mib": tree.peak_mib,
    }


def task_libraries(task: dict[str, Any]) -> dict[str, Any]:
    return _common.library_info()


TASKS = {
    "fixture": task_fixture,
    "convert": task_convert,
    "loader": task_loader,
    "direct": task_direct,
    "libraries": task_libraries,
}


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    import torch

    before = torch.get_num_threads()
    try:
        if task.get("threads"):
            torch.set_num_threads(task["threads"])
        return TASKS[task["kind"]](task)
    except Exception as err:  # recorded, not fatal: the other measurements still run
        import traceback

        return {**_common.error_record(err), "traceback": traceback.format_exc()[-3000:]}
    finally:
        torch.set_num_threads(before)  # --in-process: the next measurement starts as this one did


# ----------------------------------------------------------------------------- driver


class Runner:
    """Runs tasks in fresh processes (default) or in this one (``--in-process``)."""

    def __init__(self, in_process: bool, timeout: float) -> None:
        self.in_process = in_process
        self.timeout = timeout

    def __call__(self, task: dict[str, Any]) -> dict[str, Any]:
        label = " ".join(f"{k}={v}" for k, v in task.items() if k in ("kind", "dataset", "format", "workers", "reader", "threads"))
        print(f"[conversion] {label} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        if self.in_process:
            reset_peak_rss()
            result = run_task(task)
        else:
            result = _common.run_child(__file__, task, self.timeout)
        shown = result.get("error") or (f"{result['scenes_per_s']} scenes/s" if "scenes_per_s" in result else "done")
        print(f"[conversion]   {shown} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=2000, help="fixture scenes per dataset (default 2000)")
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma list of {', '.join(DATASETS)}")
    p.add_argument("--formats", default="webdataset,hdf5,zarr", help="storage formats to convert to (webdataset first)")
    p.add_argument("--convert-workers", help="conversion worker counts, WebDataset; the other formats use the largest "
                   "(default 1,2; --tiny: 1)")
    p.add_argument("--loader-workers", help="DataLoader worker counts (default 0,2; --tiny: 0,1)")
    p.add_argument("--threads", default="0,1",
                   help="torch threads for in-process reading (loader workers 0, direct); 0 = torch's default")
    p.add_argument("--shard-scenes", type=int, default=200, help="scenes per shard (params.yaml storage.shard_scenes)")
    p.add_argument("--batch", type=int, default=32, help="loader batch size")
    p.add_argument("--batches", type=int, default=30, help="timed batches per loader run (after the first)")
    p.add_argument("--seed", type=int, default=0, help="fixture seed")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "objdisc-bench"),
                   help="folder for fixtures (cached between runs) and converted shards")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "conversion.json"), help="result JSON")
    p.add_argument("--skip-convert", action="store_true",
                   help="measure loaders and direct reading only, on the shards an earlier run kept under --work "
                   "(its conversion figures are carried over from --out)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per measurement")
    p.add_argument("--in-process", action="store_true", help="run measurements in this process (no memory isolation)")
    p.add_argument("--tiny", action="store_true",
                   help="smoke-test size: 16 scenes, batch 4, 2 batches, no conversion pool, in-process")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.scenes, args.batch, args.batches, args.shard_scenes = 16, 4, 2, 4
        args.in_process = True
    args.convert_workers = args.convert_workers or ("1" if args.tiny else "1,2")
    args.loader_workers = args.loader_workers or ("0,1" if args.tiny else "0,2")
    return args


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child is not None:
        write_json(args.child_out, run_task(json.loads(args.child)))
        return {}

    datasets = [d for d in args.datasets.split(",") if d]
    formats = [f for f in args.formats.split(",") if f]
    convert_workers = _ints(args.convert_workers)
    loader_workers = _ints(args.loader_workers)
    thread_counts = _ints(args.threads)
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        raise SystemExit(f"error: --datasets: unknown {unknown} (known: {', '.join(DATASETS)})")
    work = Path(args.work).resolve()
    run = Runner(args.in_process, args.timeout)

    report: dict[str, Any] = {
        "benchmark": "conversion",
        "machine": machine_info(),
        "settings": {
            "scenes": args.scenes,
            "formats": formats,
            "convert_workers": convert_workers,
            "loader_workers": loader_workers,
            "threads": thread_counts,
            "shard_scenes": args.shard_scenes,
            "batch": args.batch,
            "batches": args.batches,
            "seed": args.seed,
            "isolated": not args.in_process,
            "skip_convert": args.skip_convert,
            "tiny": args.tiny,
        },
        "datasets": {},
    }
    report["libraries"] = run({"kind": "libraries"})
    started = time.perf_counter()
    for dataset in datasets:
        entry: dict[str, Any] = {"options": source_options(dataset, args.scenes), "image": image_config(dataset)}
        report["datasets"][dataset] = entry
        entry["fixture"] = fixture = run(
            {"kind": "fixture", "dataset": dataset, "work": str(work), "scenes": args.scenes, "seed": args.seed}
        )
        if "error" in fixture:
            continue

        # Conversion: WebDataset at every worker count, the other formats at the largest. The
        # conversion at the largest count is kept (and indexed) for the loaders.
        top = max(convert_workers)
        runs = [(f, w) for f in formats for w in (convert_workers if f == "webdataset" else [top])]
        entry["convert"] = []
        kept: dict[str, Path] = {}
        if args.skip_convert:
            kept = reuse_conversion(entry, dataset, formats, top, work, fixture, args)
            runs = []
        for fmt, workers in runs:
            out = work / "shards" / dataset / f"{fmt}-w{workers}"
            keep = workers == top
            entry["convert"].append(run({
                "kind": "convert", "dataset": dataset, "source": dataset, "input": fixture["path"],
                "out": str(out), "format": fmt, "workers": workers, "shard_scenes": args.shard_scenes,
                "options": entry["options"], "index": keep,
            }))
            if keep and "error" not in entry["convert"][-1]:
                kept[fmt] = out

        # In-process reading (workers 0, direct) at each --threads count: torch's intra-op threads
        # decide its speed on a busy machine; DataLoader workers always use one thread each.
        entry["loader"] = [
            run({"kind": "loader", "dataset": dataset, "shards": str(kept[fmt]), "image": entry["image"],
                 "batch": args.batch, "batches": args.batches, "workers": workers, "format": fmt,
                 "threads": threads})
            for fmt in formats if fmt in kept
            for workers in loader_workers
            for threads in (thread_counts if workers == 0 else [0])
        ]

        count = min(args.scenes, (args.batches + 1) * args.batch)
        readers = ["pil-json"] if dataset == "clevrtex" else ["objdisc-tfrecord"]
        if dataset == "clevr-with-masks" and _has_tensorflow():
            readers.append("tf.data")
        entry["direct"] = [
            run({"kind": "direct", "dataset": dataset, "reader": reader, "input": fixture["path"],
                 "image": entry["image"], "count": min(count, TF_DATA_SCENES) if reader == "tf.data" else count,
                 "threads": threads})
            for reader in readers
            for threads in thread_counts
        ]
    report["total_s"] = round(time.perf_counter() - started, 1)
    write_json(args.out, report)
    print(summary(report))
    print(f"wrote {args.out}", file=sys.stderr)
    return report


def reuse_conversion(
    entry: dict[str, Any], dataset: str, formats: list[str], top: int, work: Path, fixture: dict, args: argparse.Namespace
) -> dict[str, Path]:
    """``--skip-convert``: the loaders read the shards an earlier run kept under ``--work``, and the
    earlier run's conversion figures (from ``--out``) are carried over, marked with that run's time
    and load average."""
    kept = {}
    for fmt in formats:
        out = work / "shards" / dataset / f"{fmt}-w{top}"
        manifest = out / "convert.json"
        if not (out / "index.json").exists() or not manifest.exists():
            raise SystemExit(f"error: --skip-convert: {out} has no finished, indexed conversion; run without it")
        settings = json.loads(manifest.read_text())
        if settings["input"] != fixture["path"] or settings["shard_scenes"] != args.shard_scenes:
            raise SystemExit(f"error: --skip-convert: {manifest} was made from other input or shard size")
        kept[fmt] = out
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    earlier = previous.get("datasets", {}).get(dataset, {}).get("convert", [])
    if earlier:
        machine = previous.get("machine", {})
        entry["convert_measured_earlier"] = {
            "time_utc": machine.get("time_utc"), "load_average_start": machine.get("load_average_start"),
        }
        entry["convert"] = earlier
    return kept


def _has_tensorflow() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def summary(report: dict[str, Any]) -> str:
    """A plain-text table of the figures (also what the README shows)."""
    lines = [f"{'dataset':18} {'measurement':42} {'scenes/s':>9} {'peak RSS MiB':>13} {'tree MiB':>9}"]
    for dataset, entry in report["datasets"].items():
        rows = []
        for r in entry.get("convert", []):
            rows.append((f"convert {r.get('format', '?')} workers={r.get('workers', '?')}", r))
        for r in entry.get("loader", []):
            threads = f" threads={r['torch_threads']}" if r.get("workers") == 0 and "torch_threads" in r else ""
            rows.append((f"loader {r.get('format', '?')} workers={r.get('workers', '?')}{threads}", r))
        for r in entry.get("direct", []):
            threads = f" threads={r['torch_threads']}" if "torch_threads" in r else ""
            rows.append((f"direct {r.get('reader', '?')}{threads}", r))
        for name, r in rows:
            if "error" in r:
                lines.append(f"{dataset:18} {name:42} {'error: ' + r['error'][:60]}")
            else:
                lines.append(
                    f"{dataset:18} {name:42} {r['scenes_per_s']:9.1f} {r['peak_rss_mib']:13.0f} {r['peak_tree_rss_mib']:9.0f}"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
