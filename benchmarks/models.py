"""Training-step time and peak memory of every registered model, as JSON.

One step is the training loop's own ``objdisc.train.step.train_step`` (forward with bf16 autocast
on CUDA, fp32 on CPU, backward, gradient clipping ``train.grad_clip``, the model's own optimisers
and ``after_step``), without data loading and EMA. Batches are built from the embedded synthetic
scenes (``objdisc.data.synth.render_scene``) exactly as the loaders build them, through the model
family's transform, collated with ``default_collate``.

Settings:

* default: every model in ``objdisc.models.MODELS`` at its CPU setting (the root ``params.yaml``
  ``models:`` block), batch ``train.batch_size``, the synthetic dataset's image and views config.
* ``--paper``: each model at its paper presets (``PAPER`` below) on scenes of the paper
  dataset's size (CLEVR3D 3×240×320, MultiShapeNet 10×128×128), the paper's views settings,
  and batch sizes chosen to fit one GPU; throughput and peak GPU memory are the figures.

Each model runs in a fresh process, so its peak RSS is its own and an out-of-memory error (or any
crash) is recorded instead of ending the run; after an out-of-memory error the batch is halved
and the model tried again (``--no-halve`` to stop at the first), and the JSON lists the batch
sizes that did not fit.

    python benchmarks/models.py                           # CPU settings on CPU
    python benchmarks/models.py --device cuda --paper     # paper presets on a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import _common
from _common import ROOT, machine_info, peak_rss_mib, reset_peak_rss, rss_mib, write_json
from objdisc.config import plain  # after _common, which puts the repository on sys.path


@dataclass(frozen=True)
class PaperSetting:
    """One paper configuration: model preset, the scenes it trains on and a batch that fits a GPU."""

    model: str
    preset: str
    batch: int
    scene: tuple[int, int, int]  # views, height, width of the dataset's scenes
    views: str | None = None  # objdisc.data.views.PRESETS key (3D models)
    image: dict[str, Any] | None = None  # ImageConfig fields (2D models)


CLEVR3D = (3, 240, 320)
MSN = (10, 128, 128)
# The papers trained with larger batches on many accelerators (Slot Attention 64 on 8 V100s; SRT,
# OSRT 256 on TPUs; ObSuRF 64 on 4 GPUs): these are per-GPU batch sizes of a single-GPU run.
PAPER: tuple[PaperSetting, ...] = (
    PaperSetting("slot_attention", "clevr6", 64, (1, 240, 320), image={"crop": [29, 221, 64, 256], "size": 128}),
    PaperSetting("slot_attention", "clevr10", 64, (1, 240, 320), image={"crop": [29, 221, 64, 256], "size": 128}),
    PaperSetting("srt", "clevr3d", 32, CLEVR3D, views="clevr3d-srt"),
    PaperSetting("srt", "msn", 16, MSN, views="msn"),
    PaperSetting("srt", "isrt-msn", 16, MSN, views="msn-isrt"),
    PaperSetting("osrt", "clevr3d", 32, CLEVR3D, views="clevr3d-osrt"),
    PaperSetting("osrt", "msn-hard", 16, MSN, views="msn-hard"),
    PaperSetting("obsurf", "clevr3d", 16, CLEVR3D, views="clevr3d-obsurf"),
    PaperSetting("obsurf", "msn", 16, CLEVR3D, views="msn-obsurf"),
)
UNIQUE_SCENES = 4  # paper-size scenes rendered per setting; the batch cycles through them


# ----------------------------------------------------------------------------- one measurement


def _load_params():
    from objdisc.config import load_params

    return load_params(ROOT / "params.yaml")


def _render(views: int, height: int, width: int, count: int, seed: int) -> list[dict[str, Any]]:
    """Synthetic scenes in the canonical layout (image, mask, depth, cameras) from the generator."""
    from objdisc.data.synth import SynthConfig, render_scene

    params = _load_params()
    options = {k: v for k, v in params.synth.items() if k not in ("workers", "scenes")}
    options.update(views=views, height=height, width=width, seed=seed, scenes=max(count, 1))
    cfg = SynthConfig(**options)
    return [render_scene(cfg, i) for i in range(count)]


def make_batch(task: dict[str, Any], family: Any) -> dict[str, Any]:
    """A collated batch of ``task["batch"]`` samples in the model's layout (its family's transform)."""
    import torch
    from torch.utils.data import default_collate

    from objdisc.config import DatasetConfig, build

    views, height, width = task["scene"]
    unique = task["batch"] if task["unique_scenes"] <= 0 else min(task["batch"], task["unique_scenes"])
    scenes = _render(views, height, width, unique, task["seed"])
    data = build(DatasetConfig, {"source": "synth", "image": task["image"] or {}, "views": task["views"] or {}}, "task")
    transform = family.transform(data, train=True, where="task")
    samples = []
    for i in range(task["batch"]):
        generator = torch.Generator().manual_seed(task["seed"] * 1_000_003 + i)  # own views/rays per sample
        samples.append(transform(scenes[i % len(scenes)], generator))
    return default_collate(samples)


def task_model(task: dict[str, Any]) -> dict[str, Any]:
    """Time ``warmup + steps`` training steps of one model on one fixed batch (the loop's own
    ``train_step`` with the model's own optimisers)."""
    import torch

    from objdisc.config import TrainConfig
    from objdisc.models import MODELS, model_config, param_count
    from objdisc.train.optim import Optimisation
    from objdisc.train.step import to_device, train_step

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    device = torch.device(task["device"])
    torch.manual_seed(task["seed"])
    cfg = model_config(task["model"], task["options"], task.get("data"))
    model_cls = MODELS[task["model"]].model
    t0 = time.perf_counter()
    batch = make_batch(task, model_cls.family)
    batch_s = time.perf_counter() - t0
    shapes = {k: list(v.shape) for k, v in batch.items() if torch.is_tensor(v)}
    batch = to_device(batch, device)
    rss_before = rss_mib()

    model = model_cls(cfg).to(device).train()
    train = TrainConfig(lr=task["lr"], grad_clip=task["grad_clip"], precision=task["precision"], warmup_steps=0)
    optim = Optimisation(model.optimizers(train), train, model)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    losses = []

    def step(i: int) -> None:
        out, _ = train_step(model, model, batch, optim, i, precision=task["precision"], grad_clip=task["grad_clip"])
        losses.append(out.loss.detach())

    for i in range(task["warmup"]):  # first steps: allocator growth, optimiser state, kernel selection
        step(i)
    _sync(device)
    times = []
    for i in range(task["steps"]):
        t0 = time.perf_counter()
        step(task["warmup"] + i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    b = task["batch"]
    result: dict[str, Any] = {
        "model": task["model"],
        "setting": task["setting"],
        "options": task["options"],
        "device": task["device"],
        "precision": "bf16-autocast" if (task["precision"] == "bf16" or (task["precision"] == "auto" and device.type == "cuda")) else "fp32",
        "batch": b,
        "parameters": param_count(model),
        "family": model_cls.family.name,
        "shapes": shapes,
        "warmup": task["warmup"],
        "steps": task["steps"],
        "step_s": round(mean, 5),
        "step_s_min": round(min(times), 5),
        "step_s_max": round(max(times), 5),
        "samples_per_s": round(b / mean, 2),
        "loss_first": round(float(losses[0]), 5),
        "loss_last": round(float(losses[-1]), 5),
        "batch_build_s": round(batch_s, 3),
        "torch_threads": torch.get_num_threads(),
        "rss_before_model_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "config": plain(cfg),
    }
    if "target_rays" in shapes:  # scene models: rays and input views per second
        result["target_rays_per_s"] = round(b * shapes["target_rays"][1] / mean, 1)
        result["input_images_per_s"] = round(b * shapes["input_images"][1] / mean, 2)
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    return result


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(err: BaseException) -> bool:
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    return isinstance(err, oom_types) or (isinstance(err, (RuntimeError, MemoryError)) and "out of memory" in str(err).lower())


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    if task["kind"] == "libraries":
        return _common.library_info()
    import torch

    threads = torch.get_num_threads()
    try:
        return task_model(task)
    except BaseException as err:  # noqa: BLE001 - OOM and any other failure are results here
        if isinstance(err, KeyboardInterrupt):
            raise
        import traceback

        record = {**_common.error_record(err), "oom": _is_oom(err), "traceback": traceback.format_exc()[-3000:]}
        record.update(model=task["model"], setting=task["setting"], batch=task["batch"], threads=task.get("threads"))
        return record
    finally:
        torch.set_num_threads(threads)  # --in-process: the next model starts as this one did


# ----------------------------------------------------------------------------- driver


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The measurement tasks, in registry order."""
    from objdisc.models import MODELS

    params = _load_params()
    wanted = [m for m in (args.models.split(",") if args.models else MODELS) if m]
    unknown = sorted(set(wanted) - set(MODELS))
    if unknown:
        raise SystemExit(f"error: --models: unknown {unknown} (known: {', '.join(MODELS)})")
    common = {
        "kind": "model",
        "device": args.device,
        "precision": params.train.precision,
        "lr": params.train.lr,
        "grad_clip": params.train.grad_clip,
        "warmup": args.warmup,
        "steps": args.steps,
        "seed": params.seed,
    }
    tasks = []
    if args.paper:
        for s in PAPER:
            if s.model not in wanted:
                continue
            tasks.append({
                **common, "model": s.model, "setting": f"paper:{s.preset}", "options": {"preset": s.preset},
                "batch": args.batch or s.batch, "scene": list(s.scene), "unique_scenes": UNIQUE_SCENES,
                "image": s.image, "views": _views_preset(s.views),
                "data": {"image_size": s.image["size"]} if s.image else {},
            })
        return _per_thread_count(tasks, args)
    data = params.datasets[params.dataset]
    synth = params.synth
    scene = [int(synth.get("views", 3)), int(synth.get("height", 48)), int(synth.get("width", 64))]
    for name in wanted:
        if name not in params.models:
            raise SystemExit(f"error: params.yaml has no models.{name} block")
        selected = dataclasses.replace(params, model=name)  # that model's train overrides apply
        train = selected.training
        tasks.append({
            **common, "model": name, "setting": "cpu", "precision": train.precision, "lr": train.lr,
            "grad_clip": train.grad_clip, "options": selected.model_options, "data": selected.data_inputs,
            "batch": args.batch or train.batch_size,
            "scene": scene, "unique_scenes": 0 if not args.tiny else 1,
            "image": dataclasses.asdict(data.image), "views": dict(data.views),
        })
    return _per_thread_count(tasks, args)


def _per_thread_count(tasks: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each task once per ``--threads`` count (0: torch's default). On a shared CPU the count can
    change a step's time many times over, so the CPU results hold both."""
    counts = [int(x) for x in args.threads.split(",") if x.strip()] or [0]
    return [{**task, "threads": n} for task in tasks for n in counts]


def _views_preset(name: str | None) -> dict[str, Any] | None:
    if name is None:
        return None
    from objdisc.data.views import PRESETS

    return plain(PRESETS[name])


def measure(task: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One model, retried with half the batch after an out-of-memory error (unless --no-halve)."""
    too_big = []
    while True:
        print(f"[models] {task['model']} {task['setting']} batch={task['batch']} threads={task['threads'] or 'default'} "
              f"on {task['device']} ...",
              file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        if args.in_process:
            reset_peak_rss()
            result = run_task(task)
        else:
            result = _common.run_child(__file__, task, args.timeout)
        oom = bool(result.get("oom"))
        shown = result.get("error", "")[:120] or f"{result['step_s']:.4f} s/step, {result['samples_per_s']} samples/s"
        print(f"[models]   {shown} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        if oom and not args.no_halve and task["batch"] > 1:
            too_big.append(task["batch"])
            task = {**task, "batch": task["batch"] // 2}
            continue
        if too_big:
            result["oom_at_batch"] = too_big
        return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--paper", action="store_true", help="paper presets (see PAPER) instead of the CPU settings")
    p.add_argument("--models", default="", help="comma list of models (default: all registered)")
    p.add_argument("--batch", type=int, default=0, help="batch size for every model (default: params / PAPER)")
    p.add_argument("--steps", type=int, default=0, help="timed steps (default 10 on CPU, 20 on CUDA)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", default="0",
                   help="comma list of torch thread counts, each model measured at each (0: torch's default)")
    p.add_argument("--no-halve", action="store_true", help="record an out-of-memory error without retrying smaller")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per model")
    p.add_argument("--in-process", action="store_true", help="run models in this process (no memory isolation)")
    p.add_argument("--out", default="", help="result JSON (default benchmarks/results/models-<device>[-paper].json)")
    p.add_argument("--tiny", action="store_true", help="smoke-test size: batch 2, 1 step, no warm-up, in-process")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.batch, args.steps, args.warmup, args.in_process = args.batch or 2, args.steps or 1, 0, True
    args.steps = args.steps or (20 if args.device == "cuda" else 10)
    if not args.out:
        name = f"models-{args.device}{'-paper' if args.paper else ''}.json"
        args.out = str(ROOT / "benchmarks" / "results" / name)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child is not None:
        write_json(args.child_out, run_task(json.loads(args.child)))
        return {}
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but torch sees no CUDA device")
    report: dict[str, Any] = {
        "benchmark": "models",
        "machine": machine_info(),
        "settings": {
            "device": args.device,
            "paper": args.paper,
            "steps": args.steps,
            "warmup": args.warmup,
            "threads": [int(x) for x in args.threads.split(",") if x.strip()],
            "isolated": not args.in_process,
            "tiny": args.tiny,
        },
    }
    report["libraries"] = run_task({"kind": "libraries"}) if args.in_process else _common.run_child(__file__, {"kind": "libraries"}, 300)
    started = time.perf_counter()
    report["models"] = [measure(task, args) for task in plan(args)]
    report["total_s"] = round(time.perf_counter() - started, 1)
    write_json(args.out, report)
    print(summary(report))
    print(f"wrote {args.out}", file=sys.stderr)
    return report


def summary(report: dict[str, Any]) -> str:
    gpu = report["settings"]["device"] == "cuda"
    head = (f"{'model':15} {'setting':18} {'batch':>5} {'threads':>7} {'params':>11} {'s/step':>8} {'samples/s':>10} "
            f"{'peak RSS MiB':>12}")
    lines = [head + (f" {'peak GPU MiB':>12}" if gpu else "")]
    for r in report["models"]:
        if "error" in r:
            lines.append(f"{r['model']:15} {r['setting']:18} {r['batch']:5} error: {r['error'][:70]}")
            continue
        line = (f"{r['model']:15} {r['setting']:18} {r['batch']:5} {r['torch_threads']:7} {r['parameters']:11,} "
                f"{r['step_s']:8.4f} {r['samples_per_s']:10.1f} {r['peak_rss_mib']:12.0f}")
        if gpu:
            line += f" {r.get('peak_gpu_allocated_mib', 0):12.0f}"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
