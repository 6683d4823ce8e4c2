"""The GPU check: every registered model at its paper preset on one CUDA device, in one JSON.

For each model and paper preset (``paper_settings``: the 3D and Slot Attention settings of
``benchmarks/models.py``'s ``PAPER`` table, and for every other image model its ``benchmark``
preset, else its first non-CPU preset, at 128×128 with batch 32 as the ClevrTex benchmark trains):

* bf16-autocast training-step time and images/s (the loop's own ``train_step`` and the model's own
  optimisers), peak GPU memory;
* FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward;
  matmuls and convolutions, which is where the time goes) and the MFU estimate they give against
  the device's dense bf16 peak;
* which attention kernel ran: the CUDA kernels of one profiled step are searched for the names of
  the flash and memory-efficient SDPA kernels (models without attention report none);
* one DDP step under ``torchrun --nproc_per_node=1`` with NCCL (gloo on CPU), so the distributed
  path is exercised on the machine that will run it.

It is sized to finish in under 8 minutes on one H100 (``--steps``, ``--warmup``); an out-of-memory
batch is halved and retried, and any failure is recorded instead of ending the run.

    python benchmarks/gpu.py                      # → benchmarks/results/gpu-<device>.json
    python benchmarks/gpu.py --device cpu --tiny  # smoke test of the script itself (CPU, tiny)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
from typing import Any

import _common
from _common import ROOT, machine_info, write_json
from objdisc.config import plain  # after _common, which puts the repository on sys.path
from models import PAPER, UNIQUE_SCENES, _views_preset, make_batch

# Dense bf16 peak (TFLOP/s, without sparsity) by device name, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L4": 121.0}
# SDPA backends by the names of their ops and kernels (aten op names on any device; CUDA kernel names).
ATTENTION_KERNELS = {
    "flash": re.compile(r"flash", re.I),
    "memory_efficient": re.compile(r"(fmha|efficient_attention|mem_eff)", re.I),
    "cudnn": re.compile(r"cudnn.*attention", re.I),
}
IMAGE_SCENE = (1, 240, 320)  # CLEVR-sized synthetic views, centre-cropped to 128² as the benchmark does


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def paper_settings(tiny: bool) -> list[dict[str, Any]]:
    """One task per model and paper preset (tiny: every model once, small batch and images)."""
    from objdisc.models import MODELS

    tasks = []
    covered = set()
    for s in PAPER:
        tasks.append({"model": s.model, "preset": s.preset, "batch": s.batch, "scene": list(s.scene),
                      "image": s.image, "views": _views_preset(s.views),
                      "data": {"image_size": s.image["size"]} if s.image else {}})
        covered.add(s.model)
    for name, entry in MODELS.items():
        if name in covered:
            continue
        presets = [p for p in entry.presets if not p.startswith("cpu")]
        preset = "benchmark" if "benchmark" in presets else (presets[0] if presets else next(iter(entry.presets)))
        if entry.model.family.name != "image":
            raise SystemExit(f"error: scene model {name} has no PAPER setting in benchmarks/models.py")
        tasks.append({"model": name, "preset": preset, "batch": 32, "scene": list(IMAGE_SCENE),
                      "image": {"center_crop": 0.8, "size": 128}, "views": None, "data": {"image_size": 128}})
    if tiny:  # every model once, at its CPU preset where it has one, on small views
        seen, small = set(), []
        for t in tasks:
            if t["model"] in seen:
                continue
            seen.add(t["model"])
            preset = "cpu" if "cpu" in MODELS[t["model"]].presets else t["preset"]
            image = t["image"] and {"center_crop": 1.0, "size": 32}
            small.append({**t, "preset": preset, "batch": 2, "scene": [t["scene"][0], 48, 64], "image": image,
                          "data": {"image_size": 32} if image else {}})
        tasks = small
    return tasks


def attention_kernels(run_step, device) -> dict[str, Any]:
    """Names of the SDPA kernels one profiled step launched."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    names = {e.key for e in prof.key_averages()}
    found = {kind: sorted(n for n in names if pattern.search(n))[:3] for kind, pattern in ATTENTION_KERNELS.items()}
    sdpa = any("scaled_dot_product" in n for n in names)
    fast = bool(found["flash"] or found["memory_efficient"] or found["cudnn"])
    return {"sdpa_called": sdpa, "kernels": {k: v for k, v in found.items() if v}, "fast_kernel": fast,
            "math_fallback": sdpa and not fast}


def measure(task: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from objdisc.config import TrainConfig
    from objdisc.models import MODELS, model_config, param_count
    from objdisc.train.optim import Optimisation
    from objdisc.train.step import to_device, train_step

    device = torch.device(args.device)
    torch.manual_seed(0)
    entry = MODELS[task["model"]]
    cfg = model_config(task["model"], {"preset": task["preset"]}, task["data"])
    batch_task = {**task, "unique_scenes": UNIQUE_SCENES, "seed": 0}
    batch = to_device(make_batch(batch_task, entry.model.family), device)
    model = entry.model(cfg).to(device).train()
    train = TrainConfig(warmup_steps=0, precision="bf16" if device.type == "cuda" else "fp32")
    optim = Optimisation(model.optimizers(train), train, model)
    step_no = [0]

    def run_step() -> None:
        train_step(model, model, batch, optim, step_no[0], precision=train.precision, grad_clip=1.0)
        step_no[0] += 1

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        run_step()
    sync()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        run_step()
        sync()
        times.append(time.perf_counter() - t0)
    step_s = sum(times) / len(times)
    flops, flops_error = None, None
    try:
        with FlopCounterMode(display=False) as counter:
            run_step()
        flops = counter.get_total_flops()
    except AssertionError as e:
        # FlopCounterMode's module tracker cannot follow a module called under no_grad on inputs
        # that require grad (SLATE's implicit Slot Attention iterations): time it, leave FLOPs out.
        flops_error = f"{type(e).__name__}: {e}"
    result: dict[str, Any] = {
        "model": task["model"], "preset": task["preset"], "batch": task["batch"], "family": entry.model.family.name,
        "parameters": param_count(model), "precision": "bf16-autocast" if train.precision == "bf16" else "fp32",
        "step_s": round(step_s, 5), "step_s_min": round(min(times), 5), "images_per_s": round(task["batch"] / step_s, 2),
        "flops_per_step": flops, "achieved_tflops": round(flops / step_s / 1e12, 3) if flops else None,
        "flops_error": flops_error,
        "attention": attention_kernels(run_step, device),
        "config": plain(cfg),
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = peak_tflops(name)
        result["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
        result["mfu"] = round(flops / step_s / (peak * 1e12), 4) if peak and flops else None
    return result


def measure_with_retry(task: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    too_big = []
    while True:
        t0 = time.perf_counter()
        print(f"[gpu] {task['model']} {task['preset']} batch {task['batch']} ...", file=sys.stderr, flush=True)
        try:
            result = measure(task, args)
        except BaseException as err:  # noqa: BLE001 - a failure is a result here
            if isinstance(err, KeyboardInterrupt):
                raise
            oom = isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if oom and task["batch"] > 1:
                too_big.append(task["batch"])
                task = {**task, "batch": task["batch"] // 2}
                continue
            result = {**_common.error_record(err), "model": task["model"], "preset": task["preset"],
                      "batch": task["batch"], "traceback": traceback.format_exc()[-2000:]}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        if too_big:
            result["oom_at_batch"] = too_big
        shown = result.get("error", "")[:100] or f"{result['step_s']:.4f} s/step, {result['images_per_s']} img/s"
        print(f"[gpu]   {shown}", file=sys.stderr, flush=True)
        return result


def ddp_child() -> None:
    """Under torchrun: one DDP training step of Slot Attention (NCCL on CUDA, gloo on CPU)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from objdisc.config import TrainConfig
    from objdisc.models import build_model
    from objdisc.train import distributed
    from objdisc.train.optim import Optimisation
    from objdisc.train.step import train_step

    dist = distributed.setup("auto")
    if not torch.distributed.is_initialized():  # one process: the loop would skip DDP; the check must not
        torch.distributed.init_process_group(backend="nccl" if dist.device.type == "cuda" else "gloo")
        if dist.device.type == "cuda":
            torch.cuda.set_device(dist.device)
    model = build_model("slot_attention", {"resolution": 64, "num_slots": 4}).to(dist.device)
    net = DistributedDataParallel(model, device_ids=[dist.device] if dist.device.type == "cuda" else None)
    train = TrainConfig(warmup_steps=0)
    optim = Optimisation(model.optimizers(train), train, model)
    batch = {"image": torch.rand(4, 3, 64, 64, device=dist.device)}
    t0 = time.perf_counter()
    out, _ = train_step(net, model, batch, optim, 0, precision="auto", grad_clip=1.0)
    if dist.device.type == "cuda":
        torch.cuda.synchronize(dist.device)
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
    record = {"ok": bool(torch.isfinite(out.loss)), "backend": backend, "world_size": dist.world_size,
              "step_s": round(time.perf_counter() - t0, 4)}
    torch.distributed.destroy_process_group()
    if dist.is_main:
        print("DDP-RESULT " + json.dumps(record), flush=True)


def ddp_check(timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", __file__, "--ddp-child"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DDP-RESULT ")]
    if proc.returncode or not lines:
        return {"ok": False, "returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
    return {**json.loads(lines[-1].split(" ", 1)[1]), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--models", default="", help="comma list (default: all registered)")
    p.add_argument("--tiny", action="store_true", help="batch 2, small images, 1 step: checks the script runs")
    p.add_argument("--out", default="")
    p.add_argument("--ddp-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ddp_child:
        ddp_child()
        return {}
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; use --device cpu for a smoke run")
    if args.tiny:
        args.steps, args.warmup = 1, 0
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    out = args.out or str(ROOT / "benchmarks" / "results" / f"gpu-{slug}.json")
    tasks = paper_settings(args.tiny)
    if args.models:
        wanted = set(args.models.split(","))
        tasks = [t for t in tasks if t["model"] in wanted]
    report: dict[str, Any] = {"benchmark": "gpu", "machine": machine_info(), "libraries": _common.library_info(),
                              "device": device_name, "peak_bf16_tflops": peak_tflops(device_name),
                              "settings": {"steps": args.steps, "warmup": args.warmup, "tiny": args.tiny}}
    if args.device == "cuda":
        report["sdpa_backends_enabled"] = {"flash": torch.backends.cuda.flash_sdp_enabled(),
                                           "memory_efficient": torch.backends.cuda.mem_efficient_sdp_enabled()}
    started = time.perf_counter()
    report["models"] = []
    for task in tasks:
        report["models"].append(measure_with_retry(task, args))
        write_json(out, report)  # after every model: a run cut short keeps what it measured
    report["ddp"] = ddp_check(timeout=300)
    report["total_s"] = round(time.perf_counter() - started, 1)
    write_json(out, report)
    print(f"wrote {out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
