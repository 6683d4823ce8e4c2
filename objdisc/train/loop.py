"""The training loop shared by every model (README, "Training").

Read it top to bottom: set up (devices, DDP, seeds), build the model's optimisers and the EMA,
resume from the last checkpoint if there is one, then one flat loop of ``train_step``s with
logging, validation and checkpoints. The loop knows a model only through the protocol
(``objdisc.models.base``): ``forward(batch, step)``, ``optimizers``, ``after_step``, ``picture``
and its family; what a model needs from the data was decided by the transform the caller gave the
datasets.

A checkpoint is resumed only by the run that wrote it: the same model config, data, optimiser
settings and seed (``train.steps`` may grow; intervals and workers may change). Anything else is
an error that says what differs: a quick ``--set train.steps=10`` must never overwrite a long run.
``restart=True`` (``objdisc train --restart``, or ``OBJDISC_RESTART=1`` under ``dvc exp run``)
moves the old run aside under a new name and starts afresh; nothing is deleted.
"""

from __future__ import annotations

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
from objdisc.io import atomic_write, remove_stale_temps
from objdisc.models.base import Model
from objdisc.train import checkpoint, distributed
from objdisc.train.optim import Optimisation
from objdisc.train.step import deterministic_algorithms, to_device, train_step

CHECKPOINT = "checkpoints/last.pt"
# Settings that may change between a run and its resumption: they do not change the weights.
RESUMABLE = ("steps", "checkpoint_every", "log_every", "val_every", "val_batches", "workers", "device", "threads",
             "deterministic", "cache_mb")


class RunMismatch(ValueError):
    """The run folder holds a checkpoint of another configuration."""


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
    restart: bool = False,
) -> Path:
    """Train ``model`` for ``cfg.steps`` steps; write ``run_dir/model.pt`` (EMA weights).

    ``run_dir/checkpoints/last.pt`` and ``model.pt`` (with the step it reached) are written every
    ``cfg.checkpoint_every`` steps and at the end; the checkpoint is picked up automatically by the
    next call. ``stop_after`` ends the process's work early (tests use it to
    simulate a kill between checkpoints).
    """
    run_dir = Path(run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = distributed.setup(cfg.device)
    if cfg.batch_size % dist.world_size:
        raise ValueError(f"train.batch_size {cfg.batch_size} is not divisible by {dist.world_size} processes")
    if cfg.batch_size > len(train_set):
        raise ValueError(
            f"train.batch_size {cfg.batch_size} is larger than the {len(train_set)} training scenes: every batch "
            f"would repeat scenes; lower train.batch_size or use more data"
        )
    torch.manual_seed(seed + dist.rank)
    model.to(dist.device)
    net = DistributedDataParallel(model, device_ids=[dist.device] if dist.device.type == "cuda" else None) if dist.enabled else model

    # The model says how it is optimised (groups, rates, schedules, frozen parts); EMA of weights.
    optim = Optimisation(model.optimizers(cfg), cfg, model)
    ema = ExponentialMovingAverage(model.parameters(), decay=cfg.ema_decay)

    step = 0
    ckpt_path = run_dir / CHECKPOINT
    run = run_signature(cfg, seed, model_info)
    if dist.is_main:
        remove_stale_temps(ckpt_path.parent)  # what killed writers left (a checkpoint can be GBs)
    state = checkpoint.load(ckpt_path, dist.device) if ckpt_path.exists() else None
    if state is not None:
        problem = mismatch(state, run, cfg)
        if problem and not restart:
            raise RunMismatch(
                f"{ckpt_path} belongs to another run ({problem}); to keep it, change the settings back; to start "
                f"afresh, run `objdisc train --restart` (or OBJDISC_RESTART=1 dvc exp run ...), which moves the old "
                f"run aside"
            )
        if problem or restart:
            if dist.is_main:
                moved = set_aside(run_dir)
                print(f"restart: moved the previous run to {moved}", flush=True)
            state = None
    elif restart and dist.is_main and run_dir.exists():
        print(f"restart: moved the previous run to {set_aside(run_dir)}", flush=True)
    if state is None and dist.is_main:
        shutil.rmtree(run_dir / "live", ignore_errors=True)  # logs of a run that can no longer resume
    distributed.barrier(dist)
    if state is not None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimisation"])
        ema.load_state_dict(state["ema"])
        ema.to(dist.device)
        checkpoint.set_rng_state(state["rng"][dist.rank] if isinstance(state["rng"], list) else state["rng"])
        step = int(state["step"])
        if dist.is_main:
            truncate_logs(run_dir / "live", step)  # a kill after the checkpoint logged steps that will be redone

    # The per-rank batch; the sampler's position is a pure function of the step (exact resume).
    batch_size = cfg.batch_size // dist.world_size
    sampler = TrainSampler(len(train_set), seed, dist.rank, dist.world_size, start=step * batch_size)
    batches = iter(make_loader(train_set, batch_size, sampler, workers=cfg.workers, drop_last=True))

    live = None
    if dist.is_main:
        from dvclive import Live

        live = Live(str(run_dir / "live"), resume=step > 0, dvcyaml=None, save_dvc_exp=False)
        if step == 0:
            live.log_params({"train": asdict(cfg), "seed": seed, **(model_info or {})})

    finished_on_entry = step >= cfg.steps
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not (progress and dist.is_main))
    t0, seen = time.perf_counter(), 0
    model.train()
    # Bit-exact given the seed (TrainConfig.deterministic): on CPU torch's deterministic kernels.
    with deterministic_algorithms(cfg.deterministic, dist.device):
        while step < cfg.steps:
            batch = to_device(next(batches), dist.device)
            try:
                out, grad_norm = train_step(net, model, batch, optim, step, precision=cfg.precision, grad_clip=cfg.grad_clip)
            except FloatingPointError as err:
                raise FloatingPointError(f"{err}; last checkpoint: {ckpt_path}") from None
            ema.update()
            step += 1
            seen += batch_size * dist.world_size
            bar.update(1)

            if live is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                live.step = step
                live.log_metric("train/loss", out.loss.item())
                for name, value in out.losses.items():
                    live.log_metric(f"train/{name}", float(value))
                for name, value in optim.lrs().items():
                    live.log_metric(f"train/{name}", value)
                if grad_norm is not None:
                    live.log_metric("train/grad_norm", float(grad_norm))
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                live.log_metric("train/scenes_per_s", rate, plot=False)
                bar.set_postfix(loss=f"{out.loss.item():.4g}", scenes_s=f"{rate:.0f}")

            if val_set is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                scores = None
                if live is not None:
                    with ema.average_parameters():
                        scores, picture = validate(model, val_set, cfg, dist.device, step)
                    live.step = step
                    for name, value in scores.items():
                        live.log_metric(f"val/{name}", value)
                    if picture is not None:
                        live.log_image("val/slots.png", picture)
                optim.on_validation(distributed.broadcast(dist, scores))  # every rank cuts its rates alike

            if live is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                live.make_summary()

            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint(ckpt_path, model, optim, ema, step, dist, run)
                if dist.is_main:
                    # The EMA weights so far: an unfinished run can be evaluated, and `dvc commit`
                    # (which needs every output) can record it to be pushed and resumed elsewhere.
                    save_model(run_dir / "model.pt", model, ema, step, cfg.steps, model_info)
            if stop_after is not None and step >= stop_after:
                break
    bar.close()
    if finished_on_entry and dist.is_main:
        # Training a finished run again rewrites model.pt from its checkpoint, so `dvc repro`
        # repairs, without training, a CPU run whose model.pt holds raw weights (before 6c00b99).
        save_model(run_dir / "model.pt", model, ema, step, cfg.steps, model_info)

    if live is not None:
        live.end()
    distributed.barrier(dist)
    distributed.teardown(dist)
    return run_dir / "model.pt"


def run_signature(cfg: TrainConfig, seed: int, model_info: dict[str, Any] | None) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (plain values, stored in the checkpoint)."""
    train = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE}
    return json.loads(json.dumps({"train": train, "seed": seed, "model": model_info or {}}, sort_keys=True))


def mismatch(state: dict[str, Any], run: dict[str, Any], cfg: TrainConfig) -> str:
    """'' when ``state`` may be resumed by this run, else what differs, for people."""
    if int(state["step"]) > cfg.steps:
        return f"it has trained {int(state['step'])} steps, train.steps is {cfg.steps}"
    old = state.get("run")
    if old is None:
        return "it was written by an older objdisc without a run signature"
    diffs = [f"{key}: {a!r} → {b!r}" for key, a, b in _diff(old, run) ]
    if not diffs:
        return ""
    shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
    return shown


def _diff(a: Any, b: Any, where: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            name = f"{where}.{key}" if where else str(key)
            out += _diff(a.get(key), b.get(key), name)
        return out
    return [] if a == b else [(where, a, b)]


def set_aside(run_dir: Path) -> Path:
    """Move a run folder to ``<run_dir>.replaced-<time>`` (never delete a run: it cost compute)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
    run_dir.rename(target)
    return target


def truncate_logs(live_dir: Path, step: int) -> None:
    """Bring DVCLive's files back to the checkpoint a resumed run restarts from.

    Rows logged after ``step`` are dropped, so each step appears once in every curve. DVCLive
    writes its files in place, not atomically, so a kill can also leave a half-written last row
    or an empty ``metrics.json``; DVCLive cannot resume from the latter, so it is rewritten with
    the checkpoint's step (the next summary fills in the rest)."""
    for path in sorted((live_dir / "plots" / "metrics").rglob("*.tsv")):
        lines = path.read_text().splitlines(keepends=True)
        if not lines:
            continue
        header = lines[0].rstrip("\r\n").split("\t")
        column = header.index("step")
        kept = [lines[0]]
        for line in lines[1:]:
            fields = line.rstrip("\r\n").split("\t")
            complete = line.endswith("\n") and len(fields) == len(header) and fields[column].isdigit()
            if complete and int(fields[column]) <= step:
                kept.append(line)
        if len(kept) != len(lines):
            with atomic_write(path, "w") as f:
                f.writelines(kept)
    summary = live_dir / "metrics.json"
    if summary.exists():
        try:
            json.loads(summary.read_text())
        except ValueError:
            with atomic_write(summary, "w") as f:
                json.dump({"step": step}, f)


def save_model(path: Path, model: Model, ema, step: int, steps: int, model_info: dict[str, Any] | None) -> None:
    """model.pt: the EMA of the weights (what evaluate and render load), with the model's name and
    config. The state dict is cloned inside ``average_parameters``: on CPU ``.cpu()`` returns the
    parameter itself, and leaving the block copies the raw weights back into it."""
    with ema.average_parameters():
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    checkpoint.save_atomic({"state_dict": weights, "step": step, "steps": steps, **(model_info or {})}, path)


def save_checkpoint(
    path: Path, model: Model, optim: Optimisation, ema, step: int, dist: distributed.Dist, run: dict[str, Any]
) -> None:
    rng = checkpoint.rng_state()
    if dist.enabled:  # every rank's RNG state, so each resumes its own stream
        gathered: list[Any] = [None] * dist.world_size
        torch.distributed.all_gather_object(gathered, rng)
        rng = gathered
    if dist.is_main:
        state = {
            "model": model.state_dict(),  # parameters and buffers: per-step state such as GECO's β
            "optimisation": optim.state_dict(),
            "ema": ema.state_dict(),
            "step": step,
            "rng": rng,
            "run": run,
        }
        checkpoint.save_atomic(state, path)
    distributed.barrier(dist)


@torch.no_grad()
def validate(model: Model, val_set: SceneDataset, cfg: TrainConfig, device: torch.device, step: int) -> tuple[dict[str, float], Any]:
    """Mean validation loss and metrics over ``cfg.val_batches`` fixed batches, plus one picture."""
    model.eval()
    family = model.family
    sums: dict[str, float] = {}
    count = 0
    picture = None
    rng_state = torch.get_rng_state()  # validation must not shift the training RNG stream
    torch.manual_seed(0)
    # Image models: val_batches training-size batches. Views: val_batches scenes, every held-out
    # pixel rendered in chunks of rays (a whole view never needs more memory than a training batch).
    batch_size = family.eval_batch_size(cfg.batch_size)
    loader = make_loader(val_set, batch_size, EvalSampler(len(val_set), limit=cfg.val_batches * batch_size))
    for batch in loader:
        batch = to_device(batch, device)
        out = family.run(model, batch, step, chunk_rays=4096)
        scores = family.metrics(batch, out)
        n = batch["index"].shape[0]
        sums["loss"] = sums.get("loss", 0.0) + out.loss.item() * n
        for name, values in scores.items():
            finite = values[torch.isfinite(values)]
            sums[name] = sums.get(name, 0.0) + float(finite.sum())
        count += n
        if picture is None:
            picture = model.picture(batch, out, limit=4)
    torch.set_rng_state(rng_state)
    model.train()
    return {k: v / max(count, 1) for k, v in sums.items() if not math.isnan(v)}, picture
