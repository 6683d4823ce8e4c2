"""Evaluate a trained model on a split: metrics.json (DVC metrics), a per-scene CSV, pictures.

2D models (``inputs == "image"``): ARI, FG-ARI, mIoU (foreground, ClevrTex convention), mBO, SC,
count accuracy, MSE and PSNR of the reconstruction. 3D models (``inputs == "views"``): every target
view is rendered whole, in chunks of rays, and compared with the truth: PSNR per scene then the
mean over scenes (srt/osrt convention), and for slot models the FG-ARI and ARI of the rendered
segmentation against the true masks.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from objdisc import metrics, viz
from objdisc.config import EvaluateConfig
from objdisc.data.loading import EvalSampler, SceneDataset, make_loader
from objdisc.models.base import Model, ModelOutput, SceneModel
from objdisc.train.loop import to_device


def decode_chunked(model: SceneModel, latent: Any, origins: Tensor, dirs: Tensor, chunk: int) -> dict[str, Tensor]:
    """``model.decode`` over [B,P,3] rays in chunks of ``chunk`` rays, concatenated along P."""
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, origins.shape[1], chunk):
        out = model.decode(latent, origins[:, start : start + chunk], dirs[:, start : start + chunk])
        for key, value in out.items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values, dim=1) for key, values in parts.items()}


def batch_metrics(model: Model, batch: dict[str, Tensor], out: ModelOutput) -> dict[str, Tensor]:
    """Per-scene metrics [B] of one batch and its model output."""
    if model.inputs == "image":
        scores = metrics.image_metrics(out.recon.float().clamp(0, 1), batch["image"])
        if "mask" in batch and out.masks is not None:
            scores.update(metrics.segmentation_metrics(batch["mask"], out.masks.float()))
        return scores
    scores = metrics.image_metrics(out.recon.float().clamp(0, 1), batch["target_pixels"])
    if "target_masks" in batch and out.masks is not None:
        seg = metrics.segmentation_metrics(batch["target_masks"], out.masks.float().movedim(-1, 1))
        scores.update({"fg_ari": seg["fg_ari"], "ari": seg["ari"]})
    return scores


def picture(model: Model, batch: dict[str, Tensor], out: ModelOutput, limit: int = 8) -> np.ndarray:
    """A grid for people: 2D — input, reconstruction, predicted and true segmentation, each slot;
    3D — input view, then the first target view rendered, and its segmentation."""
    n = min(limit, batch["index"].shape[0])
    if model.inputs == "image":
        return viz.slot_grid(
            batch["image"][:n].cpu(),
            out.recon[:n].float().clamp(0, 1).cpu(),
            out.masks[:n].float().cpu(),
            batch["mask"][:n].cpu() if "mask" in batch else None,
        )
    _, _, _, height, width = batch["input_images"].shape
    rows = []
    pixels = height * width
    for b in range(n):
        row = [viz.to_image(batch["input_images"][b, 0].cpu())]
        if out.recon.shape[1] >= pixels:  # full views were rendered (evaluation layout)
            row.append(viz.to_image(out.recon[b, :pixels].float().clamp(0, 1).reshape(height, width, 3).cpu()))
            row.append(viz.to_image(batch["target_pixels"][b, :pixels].reshape(height, width, 3).cpu()))
            if out.masks is not None:
                ids = out.masks[b, :pixels].float().argmax(-1).reshape(height, width) + 1
                row.append(viz.colorize_ids(ids.cpu(), out.masks.shape[-1] + 1))
            if "target_masks" in batch:
                k = max(int(batch["target_masks"].max()) + 1, (out.masks.shape[-1] + 1) if out.masks is not None else 1)
                row.append(viz.colorize_ids(batch["target_masks"][b, :pixels].reshape(height, width).cpu(), k))
        rows.append(row)
    labels = ["input", "render", "truth"]
    if out.masks is not None and out.recon.shape[1] >= pixels:
        labels.append("pred seg")
    if "target_masks" in batch and out.recon.shape[1] >= pixels:
        labels.append("true seg")
    return viz.image_grid(rows, labels=labels[: len(rows[0])])


@torch.no_grad()
def run_model(model: Model, batch: dict[str, Tensor], chunk_rays: int) -> ModelOutput:
    """Forward for evaluation: 3D models render all target rays of the batch in chunks."""
    if model.inputs == "image":
        return model(batch)
    latent = model.encode(batch)
    rendered = decode_chunked(model, latent, batch["target_camera_pos"], batch["target_rays"], chunk_rays)
    err = ((rendered["rgb"].float() - batch["target_pixels"]) ** 2).mean()
    return ModelOutput(loss=err, losses={"mse": err}, recon=rendered["rgb"], masks=rendered.get("masks"))


@torch.no_grad()
def evaluate(
    model: Model,
    dataset: SceneDataset,
    cfg: EvaluateConfig,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, float]:
    """Evaluate ``model`` (EMA weights already loaded) on ``dataset``; write results to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    model.to(device).eval()
    torch.manual_seed(0)  # slot initialisation noise: evaluation is deterministic
    batch_size = cfg.batch_size if model.inputs == "image" else 1
    loader = make_loader(dataset, batch_size, EvalSampler(len(dataset), limit=cfg.max_scenes))
    rows: list[dict[str, Any]] = []
    grids = []
    shown = 0
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
        batch = to_device(batch, device)
        out = run_model(model, batch, cfg.chunk_rays)
        scores = batch_metrics(model, batch, out)
        for b, position in enumerate(batch["index"].tolist()):
            shard, offset = dataset.locations[position]
            row: dict[str, Any] = {"position": position, "shard": shard, "offset": offset}
            row.update({name: float(values[b]) for name, values in scores.items()})
            rows.append(row)
        if shown < cfg.pictures:
            grids.append(picture(model, batch, out, limit=cfg.pictures - shown))
            shown += min(cfg.pictures - shown, batch["index"].shape[0])
    if not rows:
        raise ValueError("evaluation split is empty")
    names = [k for k in rows[0] if k not in ("position", "shard", "offset")]
    summary: dict[str, float] = {"scenes": len(rows)}
    for name in names:
        values = np.array([r[name] for r in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[name] = float(finite.mean()) if finite.size else math.nan
    _write_csv(out_dir / "scenes.csv", rows)
    _write_json(out_dir / "metrics.json", summary)
    if grids:
        width = max(g.shape[1] for g in grids)
        grids = [np.pad(g, ((0, 0), (0, width - g.shape[1]), (0, 0)), constant_values=255) for g in grids]
        viz.save_png(out_dir / "slots.png", np.concatenate(grids, axis=0))
    return summary


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
