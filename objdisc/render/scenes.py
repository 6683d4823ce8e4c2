"""Render test scenes to videos and frames (the ``render`` stage).

The model's family draws the frames (``objdisc.models.family``): image models show each view of
the scene as the model's picture (input, reconstruction, predicted and true segmentation, slots);
scene models move the camera along a named path (``objdisc.render.motions``) and decode every
frame in chunks of rays: colour, slot segmentation, and with ``fade`` a blend from colour into
segmentation. Output per scene: ``scene_<id>/frames/<f>.png`` and ``scene_<id>.mp4``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from objdisc.config import DatasetConfig, RenderConfig
from objdisc.data.loading import SceneDataset
from objdisc.models.base import Model
from objdisc.render.video import save_frames, write_mp4


def render_scenes(
    model: Model,
    dataset: SceneDataset,
    data: DatasetConfig,
    cfg: RenderConfig,
    out_dir: str | Path,
    device="cpu",
    progress: bool = True,
    step: int = 0,
) -> list[Path]:
    """Frames and an mp4 per scene in ``cfg.scene_ids``; the model's family draws the frames."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bad = [i for i in cfg.scene_ids if not 0 <= i < len(dataset)]
    if bad:
        raise ValueError(f"render.scene_ids {bad} out of range: the split has {len(dataset)} scenes")
    model.eval()
    videos = []
    for scene_id in tqdm(cfg.scene_ids, desc="render", unit="scene", disable=not progress):
        with torch.no_grad():
            frames, fps = model.family.render_frames(model, dataset, scene_id, data, cfg, device, step)
        scene_dir = out_dir / f"scene_{scene_id}"
        save_frames(scene_dir / "frames", frames)
        videos.append(write_mp4(out_dir / f"scene_{scene_id}.mp4", frames, fps=fps, crf=cfg.crf))
    return videos
