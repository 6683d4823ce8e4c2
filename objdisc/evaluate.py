"""Evaluate a trained model on a split: metrics.json (DVC metrics), a per-scene CSV, pictures.

What is measured and drawn is the model's family's (``objdisc.models.family``): image models get
ARI, FG-ARI, mIoU (foreground, ClevrTex convention), mBO, SC, count accuracy, MSE and PSNR of the
reconstruction (object-only masks with their background channel 1 − Σ masks); scene models render
every target view whole, in chunks of rays, and compare it with the truth: PSNR per scene then the
mean over scenes (srt/osrt convention), and for slot models the FG-ARI and ARI of the rendered
segmentation against the true masks. The picture is the model's own (``Model.picture``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from objdisc import viz
from objdisc.config import EvaluateConfig
from objdisc.io import atomic_write, write_json
from objdisc.data.loading import EvalSampler, SceneDataset, make_loader
from objdisc.models.base import Model
from objdisc.train.step import to_device


@torch.no_grad()
def evaluate(
    model: Model,
    dataset: SceneDataset,
    cfg: EvaluateConfig,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
    step: int = 0,
) -> dict[str, float]:
    """Evaluate ``model`` (EMA weights already loaded, trained for ``step`` steps) on ``dataset``;
    write results to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    model.to(device).eval()
    torch.manual_seed(0)  # slot initialisation noise: evaluation is deterministic
    family = model.family
    batch_size = family.eval_batch_size(cfg.batch_size)
    loader = make_loader(dataset, batch_size, EvalSampler(len(dataset), limit=cfg.max_scenes))
    rows: list[dict[str, Any]] = []
    grids = []
    shown = 0
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
        batch = to_device(batch, device)
        out = family.run(model, batch, step, cfg.chunk_rays)
        scores = family.metrics(batch, out)
        for b, position in enumerate(batch["index"].tolist()):
            shard, offset = dataset.locations[position]
            row: dict[str, Any] = {"position": position, "shard": shard, "offset": offset}
            row.update({name: float(values[b]) for name, values in scores.items()})
            rows.append(row)
        if shown < cfg.pictures:
            grids.append(model.picture(batch, out, limit=cfg.pictures - shown))
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
    write_json(out_dir / "metrics.json", summary)
    if grids:
        width = max(g.shape[1] for g in grids)
        grids = [np.pad(g, ((0, 0), (0, width - g.shape[1]), (0, 0)), constant_values=255) for g in grids]
        viz.save_png(out_dir / "slots.png", np.concatenate(grids, axis=0))
    return summary


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
