"""Render test scenes to videos and frames (the ``render`` stage).

The model's family renders (``objdisc.models.family``): image models make one video,
``scenes.mp4``, of the chosen scenes one after another, each frame the model's picture of a view
(input, reconstruction, predicted and true segmentation, each slot), frames in ``scenes/``; scene
models move the camera along a named path (``objdisc.render.motions``) around each scene and
decode every frame in chunks of rays (colour, slot segmentation, with ``fade`` a blend from colour
into segmentation): ``scene_<id>.mp4`` and ``scene_<id>/frames/<f>.png``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from objdisc.config import DatasetConfig, RenderConfig
from objdisc.data.loading import SceneDataset
from objdisc.models.base import Model


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
    with torch.no_grad():
        return model.family.render(model, dataset, data, cfg, out_dir, device, step, progress)
