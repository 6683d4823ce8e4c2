"""Render test scenes to videos and frames (the ``render`` stage).

2D models: each view of each chosen scene becomes one frame showing input, reconstruction, predicted
and true segmentation and the slots side by side. 3D models: the camera moves along a named path
(``objdisc.render.motions``) around the scene; the input views are encoded once and every frame
is decoded in chunks of rays: colour, slot segmentation (slot models), and with ``fade`` a blend
from colour into segmentation. Output per scene: ``scene_<id>/frames/<f>.png`` and
``scene_<id>.mp4``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from objdisc import viz
from objdisc.config import RenderConfig
from objdisc.data.transforms import image_sample
from objdisc.data.loading import SceneDataset
from objdisc.models.base import Model
from objdisc.render.motions import camera_path, ease_fade
from objdisc.render.video import save_frames, write_mp4


def render_scenes(
    model: Model, dataset: SceneDataset, cfg: RenderConfig, out_dir: str | Path, device="cpu", progress: bool = True
) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bad = [i for i in cfg.scene_ids if not 0 <= i < len(dataset)]
    if bad:
        raise ValueError(f"render.scene_ids {bad} out of range: the split has {len(dataset)} scenes")
    videos = []
    for scene_id in tqdm(cfg.scene_ids, desc="render", unit="scene", disable=not progress):
        if model.inputs == "image":
            frames, fps = _frames_2d(model, dataset, scene_id, device), max(1, min(cfg.fps, 2))
        else:
            frames, fps = _frames_3d(model, dataset, scene_id, cfg, device), cfg.fps
        scene_dir = out_dir / f"scene_{scene_id}"
        save_frames(scene_dir / "frames", frames)
        videos.append(write_mp4(out_dir / f"scene_{scene_id}.mp4", frames, fps=fps, crf=cfg.crf))
    return videos


@torch.no_grad()
def _frames_2d(model: Model, dataset: SceneDataset, scene_id: int, device) -> list[np.ndarray]:
    """One frame per view: the slot grid of that view."""
    scene = dataset.scene(scene_id)
    frames = []
    image_cfg = dataset.transform.keywords["cfg"]  # the 2D transform's ImageConfig
    for view in range(scene["image"].shape[0]):
        sample = image_sample(scene, image_cfg, view)
        batch = {k: v[None].to(device) for k, v in sample.items()}
        torch.manual_seed(0)
        out = model(batch)
        frames.append(
            viz.slot_grid(batch["image"][0].cpu(), out.recon[0].float().clamp(0, 1).cpu(), out.masks[0].float().cpu(),
                          batch["mask"][0].cpu() if "mask" in batch else None)
        )
    return frames


@torch.no_grad()
def _frames_3d(model: Model, dataset: SceneDataset, scene_id: int, cfg: RenderConfig, device) -> list[np.ndarray]:
    from objdisc.data.views import make_render_rays
    from objdisc.evaluate import decode_chunked

    sample = dataset[(scene_id, 0)]
    batch = {k: v[None].to(device) if torch.is_tensor(v) else v for k, v in sample.items()}
    torch.manual_seed(0)
    latent = model.encode(batch)
    scene = dataset.scene(scene_id)
    height = cfg.height or scene["image"].shape[1]
    width = cfg.width or scene["image"].shape[2]
    view = 0
    intrinsics = scene["intrinsics"][view].astype(np.float64).copy()
    intrinsics[0] *= width / scene["image"].shape[2]
    intrinsics[1] *= height / scene["image"].shape[1]
    poses, ks = camera_path(scene["cam2world"][view].astype(np.float64), intrinsics, cfg.motion, cfg.num_frames)
    transform = batch["transform"][0] if "transform" in batch else None
    input_image = viz.to_image(batch["input_images"][0, 0].cpu())
    frames = []
    for f in range(cfg.num_frames):
        origins, dirs = make_render_rays(torch.from_numpy(poses[f]).float().to(device), torch.from_numpy(ks[f]).float().to(device), height, width, transform)
        out = decode_chunked(model, latent, origins.reshape(1, -1, 3), dirs.reshape(1, -1, 3), cfg.chunk_rays)
        rgb = out["rgb"][0].float().clamp(0, 1).reshape(height, width, 3).cpu().numpy()
        colour = np.round(rgb * 255).astype(np.uint8)
        panels = [input_image, colour]
        if "masks" in out:
            weights = out["masks"][0].float().cpu()
            num_slots = weights.shape[-1]
            seg = viz.colorize_ids((weights.argmax(-1) + 1).reshape(height, width), num_slots + 1)
            if cfg.fade:  # blend colour into segmentation along the fade curve
                a = float(ease_fade(f / max(cfg.num_frames - 1, 1)))
                panels[1] = np.round((1 - a) * colour + a * seg).astype(np.uint8)
            panels.append(seg)
        frames.append(viz.image_grid([panels], labels=["input", "render", "segmentation"][: len(panels)]))
    return frames
