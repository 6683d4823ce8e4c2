"""The proving ground of the 2D model zoo: does each model learn, and what does it cost on a CPU?

For each model (its ``models.<name>`` block of params.yaml, the ``cpu`` preset) on the embedded
sprites (``dataset=sprites``), through the same library calls as the DVC stages:

1. the sprites are generated, converted and indexed once into ``--work`` (reused by later runs);
2. the model is built with the run's seed and evaluated untrained on the test split (its MSE is
   the baseline: a model that learns halves it at least, the README's proving-ground bar);
3. it trains for its configured steps (wall time measured), then is evaluated and rendered;
4. the record holds FG-ARI, ARI, mIoU, mBO, MSE (trained and untrained), count accuracy, the
   validation curve, the train / evaluate / render wall times, the CPU step time and peak memory,
   the machine's load, and whether it passed the bar (FG-ARI ≥ 0.5 and above the image-blind
   floor ``fg_ari_fixed_cells``, MSE ≤ ½ untrained, ≤ 15 min).

Results merge into ``benchmarks/results/zoo-cpu.json`` by model, so models can be measured one at
a time. Heavy runs on a shared machine should not overlap: run it under ``flock`` (see the README).

    python benchmarks/zoo.py --models slot_attention          # one model
    python benchmarks/zoo.py                                  # every 2D model in the registry
    python benchmarks/zoo.py --models monet --set train.steps=200   # a shorter look
    python benchmarks/zoo.py --table                          # the results so far, as Markdown
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT, machine_info, bench_params, write_json

BAR = {"fg_ari": 0.5, "mse_ratio": 0.5, "minutes": 15.0}


def prepare_data(params, progress: bool) -> dict[str, float]:
    """Generate, convert and index the sprites (each step skipped when its output is there)."""
    from objdisc import pipeline

    times = {}
    t0 = time.perf_counter()
    if not (ROOT / "data/raw/sprites").exists():
        pipeline.synth(params, "sprites", ROOT / "data/raw/sprites", progress=progress)
    times["generate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipeline.convert(params, progress=progress)
    times["convert_s"] = time.perf_counter() - t0
    if not params.index_path().exists():
        pipeline.index(params, progress=progress)
    return times


def curve(run_dir: Path, name: str) -> list[list[float]]:
    path = run_dir / "live/plots/metrics/val" / f"{name}.tsv"
    if not path.exists():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    return [[int(r[0]), round(float(r[1]), 4)] for r in rows]


MARKER = ".made-by-benchmarks-zoo"  # in each run folder this script made, and only those


def fresh_run_dir(run_dir: Path) -> None:
    """Every measurement is a fresh run: the folder of the previous one is deleted, but only if
    this script made it. With ``--work`` pointing at a pipeline's outputs (``--work data``), the
    run folder is a user's trained model, and deleting it would lose hours; that stops here."""
    if run_dir.exists():
        if not (run_dir / MARKER).exists():
            raise SystemExit(f"error: {run_dir} exists and was not made by benchmarks/zoo.py; not deleting it. "
                             "Give --work a folder of its own (default data/zoo).")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / MARKER).touch()


def prove(model: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from objdisc import pipeline
    from objdisc.evaluate import evaluate
    from objdisc.models import MODELS, param_count

    work = Path(args.work).resolve()
    # shards, index and runs under the work folder; raw stays in data/raw
    params = bench_params(model, args.set or [], args.option or [], outputs=work)
    os.chdir(ROOT)
    if MODELS[model].model.family.name != "image":
        return {"model": model, "skipped": "not a 2D model"}
    load_start = os.getloadavg()
    times = prepare_data(params, args.progress)
    run_dir = params.run_dir()
    fresh_run_dir(run_dir)

    # The baseline: the same model, same seed, untrained.
    torch.manual_seed(params.seed)
    untrained = MODELS[model].model(pipeline.config(params)).eval()
    test_set = pipeline.dataset(params, params.evaluate.split, train=False)
    t0 = time.perf_counter()
    base = evaluate(untrained, test_set, params.evaluate, work / "untrained" / model, "cpu", progress=False, step=0)
    times["evaluate_untrained_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pipeline.train(params, progress=args.progress)
    times["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = pipeline.evaluate(params, progress=args.progress)
    times["evaluate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipeline.render(params, progress=args.progress)
    times["render_s"] = time.perf_counter() - t0
    pipeline_s = times["train_s"] + times["evaluate_s"] + times["render_s"]

    train = params.training
    mse_ratio = scores["mse"] / base["mse"] if base["mse"] > 0 else float("nan")
    record = {
        "model": model,
        "preset": params.models[model].get("preset"),
        "parameters": param_count(untrained),
        "train": {"steps": train.steps, "batch_size": train.batch_size, "lr": train.lr, "optimizer": train.optimizer},
        "overrides": args.set or [],
        "options": args.option or [],
        "seed": params.seed,
        "scores": {k: round(v, 5) for k, v in scores.items()},
        "untrained": {k: round(base[k], 5) for k in ("mse", "fg_ari", "ari", "miou") if k in base},
        "mse_ratio": round(mse_ratio, 4),
        "times_s": {k: round(v, 1) for k, v in times.items()},
        "step_s": round(times["train_s"] / max(train.steps, 1), 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "curves": {name: curve(run_dir, name) for name in ("fg_ari", "mse", "miou", "loss")},
        "picture": str((run_dir / "eval/slots.png").relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir / "eval/slots.png"),
    }
    record["passed"] = {
        "fg_ari": scores.get("fg_ari", 0.0) >= BAR["fg_ari"],
        # The image-blind partition into as many fixed cells as the model has segments reaches
        # FG-ARI ≈ 0.5 on the sprites by itself (0.506 with 6 cells): a model must beat it too.
        "above_floor": scores.get("fg_ari", 0.0) > scores.get("fg_ari_fixed_cells", 1.0),
        "mse": mse_ratio <= BAR["mse_ratio"],
        "time": pipeline_s / 60 <= BAR["minutes"],
    }
    return record


def table(report: dict[str, Any]) -> str:
    """The results as a Markdown table, one row per measured model (``--table``)."""
    rows = ["| model | parameters | steps × batch | FG-ARI | image-blind FG-ARI | ARI | mIoU | MSE / untrained | train (min) | s/step | load (1 min, end) | bar |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["models"].items():
        s, t = r.get("scores", {}), r.get("train", {})
        ok = all((r.get("passed") or {}).values()) if r.get("passed") else False
        failed = [k for k, v in (r.get("passed") or {}).items() if not v]
        rows.append(f"| {name} | {r.get('parameters', 0):,} | {t.get('steps')} × {t.get('batch_size')} | {s.get('fg_ari', float('nan')):.2f} | "
                    f"{s.get('fg_ari_fixed_cells', float('nan')):.2f} | {s.get('ari', float('nan')):.2f} | {s.get('miou', float('nan')):.2f} | {r.get('mse_ratio')} | "
                    f"{r.get('times_s', {}).get('train_s', 0) / 60:.1f} | {r.get('step_s')} | {r.get('load_average', {}).get('end', ['?'])[0]} | "
                    f"{'passed' if ok else 'failed: ' + ', '.join(failed)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="", help="comma list (default: every 2D model in the registry)")
    p.add_argument("--set", action="append", help="params override (key=value), repeatable")
    p.add_argument("--option", action="append", help="a field of the model's config (field=YAML value), repeatable")
    p.add_argument("--work", default=str(ROOT / "data" / "zoo"), help="shards, index and runs of the benchmark")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "zoo-cpu.json"))
    p.add_argument("--progress", action="store_true")
    p.add_argument("--table", action="store_true", help="print the results in --out as a Markdown table and stop")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return {}
    from objdisc.models import MODELS

    names = [m for m in args.models.split(",") if m] or [n for n, e in MODELS.items() if e.model.family.name == "image"]
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {"benchmark": "zoo-cpu", "bar": BAR, "models": {}}
    for name in names:
        print(f"[zoo] {name} ...", file=sys.stderr, flush=True)
        record = prove(name, args)
        record["machine"] = machine_info()
        report["models"][name] = record
        write_json(out, report)  # after every model
        s = record.get("scores", {})
        print(f"[zoo]   FG-ARI {s.get('fg_ari', float('nan')):.3f}  MSE ratio {record.get('mse_ratio')}  "
              f"train {record.get('times_s', {}).get('train_s')} s  passed {record.get('passed')}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
