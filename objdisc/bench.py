"""``objdisc bench``: loader throughput, train-step throughput and peak memory, as JSON.

Speed goals live here, not in timed tests. Numbers are for the params' current model and dataset
on this machine; the JSON records the device and settings so runs can be compared.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import torch

from objdisc import pipeline
from objdisc.config import Params
from objdisc.data.loading import TrainSampler, make_loader
from objdisc.models import build_model, param_count
from objdisc.train.distributed import pick_device
from objdisc.train.loop import autocast, to_device


def run_bench(params: Params, out: str | Path, steps: int = 10, batches: int = 20) -> dict[str, Any]:
    device = pick_device(params.training.device)
    cfg = params.training
    train_set = pipeline.dataset(params, params.data.train_split, train=True)

    # Loader: scenes/s through storage → decode → transform → collate, with the configured workers.
    loader = iter(make_loader(train_set, cfg.batch_size, TrainSampler(len(train_set), params.seed), workers=cfg.workers, drop_last=True))
    next(loader)  # start-up (worker spawn) is not throughput
    t0 = time.perf_counter()
    for _ in range(batches):
        batch = next(loader)
    loader_rate = batches * cfg.batch_size / (time.perf_counter() - t0)

    # Training step: forward + backward + Adam on one fixed batch (data loading excluded).
    torch.manual_seed(params.seed)
    model = build_model(params.model, params.model_options).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batch = to_device(batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with autocast(device, cfg.precision):
            out = model(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    step()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    step_time = (time.perf_counter() - t0) / steps
    result = {
        "model": params.model,
        "dataset": params.dataset,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": cfg.batch_size,
        "loader_workers": cfg.workers,
        "parameters": param_count(model),
        "loader_scenes_per_s": round(loader_rate, 2),
        "train_step_s": round(step_time, 4),
        "train_images_per_s": round(cfg.batch_size / step_time, 2),
        "peak_host_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device.type == "cuda":
        result["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
