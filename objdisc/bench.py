"""``objdisc bench``: loader throughput, train-step throughput and peak memory, as JSON.

Speed goals live here, not in timed tests. Numbers are for the params' current model and dataset
on this machine; the JSON records the device and settings so runs can be compared.
"""

from __future__ import annotations

import platform
import resource
import time
from pathlib import Path
from typing import Any

import torch

from objdisc import pipeline
from objdisc.config import Params
from objdisc.io import write_json
from objdisc.data.loading import TrainSampler, make_loader
from objdisc.models import MODELS, param_count
from objdisc.train.distributed import pick_device
from objdisc.train.optim import Optimisation
from objdisc.train.step import to_device, train_step


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

    # Training steps on one fixed batch (data loading excluded): the loop's own step with the
    # model's own optimisers.
    torch.manual_seed(params.seed)
    model = MODELS[params.model].model(pipeline.config(params)).to(device).train()
    optim = Optimisation(model.optimizers(cfg), cfg, model)
    batch = to_device(batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(i: int) -> None:
        train_step(model, model, batch, optim, i, precision=cfg.precision, grad_clip=cfg.grad_clip)

    step(0)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i + 1)
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
    write_json(out, result)
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
