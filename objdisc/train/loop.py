"""The training loop shared by every model (design.md section 6).

Read it top to bottom: set up (devices, DDP, seeds), build optimiser, schedule and EMA, resume from
the last checkpoint if there is one, then one flat loop of steps. The loop knows a model only
through ``forward(batch) -> ModelOutput``; what a model needs from the data is decided by the
transform the caller gave the dataset.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch_ema import ExponentialMovingAverage
from tqdm import tqdm

from objdisc.config import TrainConfig
from objdisc.data.loading import EvalSampler, SceneDataset, TrainSampler, make_loader
from objdisc.models.base import Model
from objdisc.train import checkpoint, distributed
from objdisc.train.schedule import warmup_decay

CHECKPOINT = "checkpoints/last.pt"


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (``auto`` or ``bf16``); plain fp32 on CPU unless ``bf16`` is asked for."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(
    model: Model,
    train_set: SceneDataset,
    val_set: SceneDataset | None,
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    seed: int = 0,
    model_info: dict[str, Any] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> Path:
    """Train ``model`` for ``cfg.steps`` steps; write ``run_dir/model.pt`` (EMA weights).

    ``run_dir/checkpoints/last.pt`` is written every ``cfg.checkpoint_every`` steps and picked up
    automatically by the next call. ``stop_after`` ends the process's work early (tests use it to
    simulate a kill between checkpoints).
    """
    from objdisc import evaluate  # evaluation helpers: metrics and pictures of one batch

    run_dir = Path(run_dir)
    dist = distributed.setup(cfg.device)
    torch.manual_seed(seed + dist.rank)
    model.to(dist.device)
    net = DistributedDataParallel(model, device_ids=[dist.device] if dist.device.type == "cuda" else None) if dist.enabled else model

    # Adam with a linear warm-up and exponential decay (the Slot Attention recipe), EMA of weights.
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = warmup_decay(optimizer, cfg.warmup_steps, cfg.decay_steps, cfg.decay_rate)
    ema = ExponentialMovingAverage(model.parameters(), decay=cfg.ema_decay)

    step = 0
    ckpt_path = run_dir / CHECKPOINT
    key = fingerprint(cfg, seed, model_info)
    state = checkpoint.load(ckpt_path, dist.device) if ckpt_path.exists() else None
    if state is not None and (state.get("fingerprint") != key or int(state["step"]) > cfg.steps):
        # Made by a different run (other model, data, optimiser or seed, or a longer run): start afresh.
        if dist.is_main:
            print(f"ignoring {ckpt_path}: it belongs to a different run configuration", flush=True)
        state = None
    if state is None and dist.is_main:
        shutil.rmtree(run_dir / "live", ignore_errors=True)
    distributed.barrier(dist)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        ema.load_state_dict(state["ema"])
        ema.to(dist.device)
        checkpoint.set_rng_state(state["rng"][dist.rank] if isinstance(state["rng"], list) else state["rng"])
        step = int(state["step"])

    # The per-rank batch; the sampler's position is a pure function of the step (exact resume).
    if cfg.batch_size % dist.world_size:
        raise ValueError(f"train.batch_size {cfg.batch_size} is not divisible by {dist.world_size} processes")
    batch_size = cfg.batch_size // dist.world_size
    sampler = TrainSampler(len(train_set), seed, dist.rank, dist.world_size, start=step * batch_size)
    batches = iter(make_loader(train_set, batch_size, sampler, workers=cfg.workers, drop_last=True))

    live = None
    if dist.is_main:
        from dvclive import Live

        live = Live(str(run_dir / "live"), resume=step > 0, dvcyaml=None, save_dvc_exp=False)
        if step == 0:
            live.log_params({"train": asdict(cfg), "seed": seed, **(model_info or {})})

    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not (progress and dist.is_main))
    t0, seen = time.perf_counter(), 0
    model.train()
    while step < cfg.steps:
        batch = to_device(next(batches), dist.device)
        with autocast(dist.device, cfg.precision):
            out = net(batch)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"loss is {out.loss.item()} at step {step}; last checkpoint: {ckpt_path}")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        )
        optimizer.step()
        schedule.step()
        ema.update()
        step += 1
        seen += batch_size * dist.world_size
        bar.update(1)

        if live is not None and (step % cfg.log_every == 0 or step == cfg.steps):
            live.step = step
            live.log_metric("train/loss", out.loss.item())
            for name, value in out.losses.items():
                live.log_metric(f"train/{name}", float(value))
            live.log_metric("train/lr", schedule.get_last_lr()[0])
            if grad_norm is not None:
                live.log_metric("train/grad_norm", float(grad_norm))
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            live.log_metric("train/scenes_per_s", rate, plot=False)
            bar.set_postfix(loss=f"{out.loss.item():.4g}", scenes_s=f"{rate:.0f}")

        if val_set is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            if live is not None:
                with ema.average_parameters():
                    scores, picture = validate(model, val_set, cfg, dist.device, evaluate)
                live.step = step
                for name, value in scores.items():
                    live.log_metric(f"val/{name}", value)
                if picture is not None:
                    live.log_image("val/slots.png", picture)
            distributed.barrier(dist)

        if live is not None and (step % cfg.log_every == 0 or step == cfg.steps):
            live.make_summary()

        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt_path, model, optimizer, schedule, ema, step, dist, key)
        if stop_after is not None and step >= stop_after:
            break
    bar.close()

    final = run_dir / "model.pt"
    if dist.is_main and step >= cfg.steps:
        with ema.average_parameters():
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        checkpoint.save_atomic({"state_dict": state, "step": step, **(model_info or {})}, final)
    if live is not None:
        live.end()
    distributed.barrier(dist)
    distributed.teardown(dist)
    return final


def fingerprint(cfg: TrainConfig, seed: int, model_info: dict[str, Any] | None) -> str:
    """What must match for a checkpoint to be resumed (the step count may grow; intervals may change)."""
    relevant = {k: v for k, v in asdict(cfg).items() if k not in ("steps", "checkpoint_every", "log_every", "val_every", "val_batches", "workers", "device")}
    return json.dumps({"train": relevant, "seed": seed, "model": model_info or {}}, sort_keys=True)


def save_checkpoint(
    path: Path, model, optimizer, schedule, ema, step: int, dist: distributed.Dist, key: str
) -> None:
    rng = checkpoint.rng_state()
    if dist.enabled:  # every rank's RNG state, so each resumes its own stream
        gathered: list[Any] = [None] * dist.world_size
        torch.distributed.all_gather_object(gathered, rng)
        rng = gathered
    if dist.is_main:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "ema": ema.state_dict(),
            "step": step,
            "rng": rng,
            "fingerprint": key,
        }
        checkpoint.save_atomic(state, path)
    distributed.barrier(dist)


@torch.no_grad()
def validate(model: Model, val_set: SceneDataset, cfg: TrainConfig, device: torch.device, evaluate) -> tuple[dict[str, float], Any]:
    """Mean validation loss and metrics over ``cfg.val_batches`` fixed batches, plus one picture."""
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    picture = None
    rng_state = torch.get_rng_state()  # validation must not shift the training RNG stream
    torch.manual_seed(0)
    # 2D: val_batches training-size batches. 3D: val_batches scenes, every held-out pixel rendered
    # in chunks of rays (a whole view never needs more memory than a training batch).
    batch_size = cfg.batch_size if model.inputs == "image" else 1
    loader = make_loader(val_set, batch_size, EvalSampler(len(val_set), limit=cfg.val_batches * batch_size))
    for batch in loader:
        batch = to_device(batch, device)
        out = evaluate.run_model(model, batch, chunk_rays=4096)
        scores = evaluate.batch_metrics(model, batch, out)
        n = batch["index"].shape[0]
        sums["loss"] = sums.get("loss", 0.0) + out.loss.item() * n
        for name, values in scores.items():
            finite = values[torch.isfinite(values)]
            sums[name] = sums.get(name, 0.0) + float(finite.sum())
        count += n
        if picture is None:
            picture = evaluate.picture(model, batch, out, limit=4)
    torch.set_rng_state(rng_state)
    model.train()
    return {k: v / max(count, 1) for k, v in sums.items() if not math.isnan(v)}, picture
