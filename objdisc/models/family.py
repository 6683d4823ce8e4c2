"""Model families: what differs between image models and scene (views) models, in one place.

A model declares ``family = IMAGE`` or ``family = VIEWS`` (``objdisc.models.base``); training,
validation, evaluation, pictures and rendering ask the family instead of switching on the kind of
model:

* ``transform`` — a dataset's canonical scene → one sample in the model's batch layout;
* ``check_dataset`` — whether a dataset has what the family needs (cameras for views);
* ``eval_batch_size`` / ``run`` — the evaluation forward (views: every target ray, in chunks);
* ``metrics`` — per-scene numbers of one batch (object-only masks get their background channel);
* ``picture`` — the default grid of a batch; ``render_frames`` — the frames of one test scene.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from objdisc import metrics, viz
from objdisc.models.output import ModelOutput

if TYPE_CHECKING:
    from objdisc.config import DatasetConfig, ImageConfig, RenderConfig
    from objdisc.data.loading import SceneDataset
    from objdisc.data.schema import Scene
    from objdisc.models.base import Model


class Family(ABC):
    name: str = ""

    @abstractmethod
    def transform(
        self, data: DatasetConfig, train: bool, where: str = "dataset", model: type | None = None
    ) -> Callable[..., dict[str, Any]]:
        """A picklable ``(scene, generator) → sample`` for the DataLoader (training or evaluation);
        ``model`` (its class) fills what the dataset's block leaves to the model."""

    @abstractmethod
    def metrics(self, batch: dict[str, Tensor], out: ModelOutput) -> dict[str, Tensor]:
        """Per-scene metrics [B] of one batch and its model output."""

    @abstractmethod
    def picture(self, model: Model, batch: dict[str, Tensor], out: ModelOutput, limit: int = 8) -> np.ndarray:
        """The default picture of a batch (models may draw their own: ``Model.picture``)."""

    @abstractmethod
    def render(
        self, model: Model, dataset: SceneDataset, data: DatasetConfig, cfg: RenderConfig, out_dir: Path, device,
        step: int, progress: bool = True,
    ) -> list[Path]:
        """Videos (mp4) and their frames (PNG) of the test scenes ``cfg.scene_ids`` under ``out_dir``."""

    def check_dataset(self, schema: dict[str, dict[str, Any]], data: DatasetConfig, model: type, names: tuple[str, str]) -> None:
        """Raise ``ValueError`` (naming the key) when a dataset with this index ``schema`` (field →
        dtype and per-scene shape) cannot feed ``model`` with the dataset block ``data``; checked
        before training, so a mismatch is one line and not an error inside a loader worker.
        ``names`` are the model's and the dataset's names in the params."""

    def eval_batch_size(self, batch_size: int) -> int:
        return batch_size

    def run(self, model: Model, batch: dict[str, Tensor], step: int, chunk_rays: int) -> ModelOutput:
        return model(batch, step=step)

    def __repr__(self) -> str:
        return f"<family {self.name}>"


# ------------------------------------------------------------------------------------- image


def image_transform(scene: Scene, generator: torch.Generator | None, *, cfg: ImageConfig, train: bool) -> dict[str, Any]:
    from objdisc.data.transforms import image_sample, pick_view

    view = pick_view(scene, cfg, generator) if train else 0
    return image_sample(scene, cfg, view)


class ImageFamily(Family):
    """One view in (``batch["image"]`` [B,3,H,W] in [0,1], ``batch["mask"]`` [B,H,W] ids), an
    image out; reconstruction and segmentation metrics."""

    name = "image"

    def transform(
        self, data: DatasetConfig, train: bool, where: str = "dataset", model: type | None = None
    ) -> Callable[..., dict[str, Any]]:
        return functools.partial(image_transform, cfg=data.image, train=train)

    def metrics(self, batch: dict[str, Tensor], out: ModelOutput) -> dict[str, Tensor]:
        scores = metrics.image_metrics(out.recon.float().clamp(0, 1), batch["image"])
        if "mask" in batch and out.masks is not None:
            scores.update(metrics.segmentation_metrics(batch["mask"], out.masks.float(), out.masks_have_background))
            # The image-blind floor of FG-ARI: the image cut into as many fixed cells as the model
            # has segments. The gap between `fg_ari` and `fg_ari_fixed_cells` is what the model
            # found about the objects, as `psnr` over `psnr_mean_colour` for the 3D models.
            segments = out.masks.shape[1] + (0 if out.masks_have_background else 1)
            scores["fg_ari_fixed_cells"] = metrics.fg_ari_fixed_cells(batch["mask"], segments)
        return scores

    def picture(self, model: Model, batch: dict[str, Tensor], out: ModelOutput, limit: int = 8) -> np.ndarray:
        """Input, reconstruction (with boxes where the model has them), predicted and true
        segmentation, and each slot's RGB·mask on white."""
        n = min(limit, batch["image"].shape[0])
        masks = out.masks[:n].float().cpu()
        if not out.masks_have_background:
            masks = metrics.with_background(masks)  # column "slot 0" is then the implicit background
        recon = out.recon[:n].float().clamp(0, 1).cpu()
        if out.boxes is not None:
            shown = out.presence[:n] > 0.5 if out.presence is not None else None
            recon = [viz.draw_boxes(recon[b], out.boxes[b], None if shown is None else shown[b]) for b in range(n)]
        slot_rgb = None
        if out.slot_rgb is not None:
            slot_rgb = out.slot_rgb[:n].float().clamp(0, 1).cpu()
            if not out.masks_have_background:  # the background slot shows the reconstruction
                slot_rgb = torch.cat([out.recon[:n, None].float().clamp(0, 1).cpu(), slot_rgb], dim=1)
        # Slots in the same order in every row: by area, largest first (the background leads), so
        # column k and colour k + 1 of the predicted segmentation mean the same kind of slot.
        order = masks.flatten(2).sum(-1).argsort(dim=1, descending=True, stable=True)
        masks = masks.gather(1, order[:, :, None, None].expand_as(masks))
        if slot_rgb is not None:
            slot_rgb = slot_rgb.gather(1, order[:, :, None, None, None].expand_as(slot_rgb))
        return viz.slot_grid(
            batch["image"][:n].cpu(),
            recon,
            masks.cpu(),
            batch["mask"][:n].cpu() if "mask" in batch else None,
            slot_recons=slot_rgb,
        )

    def render(
        self, model: Model, dataset: SceneDataset, data: DatasetConfig, cfg: RenderConfig, out_dir: Path, device,
        step: int, progress: bool = True,
    ) -> list[Path]:
        """One video, ``scenes.mp4``, that shows the test scenes one after another, each view a frame
        with the model's picture of it (the evaluation picture's row); frames in ``scenes/``."""
        from objdisc.data.transforms import image_sample
        from objdisc.render.video import save_frames, write_mp4

        if cfg.slots:
            raise ValueError(
                f"render.slots: model {type(model).__name__} renders 2D pictures, which already show each slot; "
                f"set render.slots to false"
            )
        frames = []
        for scene_id in tqdm(cfg.scene_ids, desc="render", unit="scene", disable=not progress):
            scene = dataset.scene(scene_id)
            for view in range(scene["image"].shape[0]):
                sample = image_sample(scene, data.image, view)
                batch = {k: v[None].to(device) for k, v in sample.items()}
                torch.manual_seed(0)
                frames.append(model.picture(batch, self.run(model, batch, step, cfg.chunk_rays), limit=1))
        height = max(f.shape[0] for f in frames)
        width = max(f.shape[1] for f in frames)
        frames = [np.pad(f, ((0, height - f.shape[0]), (0, width - f.shape[1]), (0, 0)), constant_values=255) for f in frames]
        save_frames(out_dir / "scenes", frames)
        return [write_mp4(out_dir / "scenes.mp4", frames, fps=max(1, min(cfg.fps, 2)), crf=cfg.crf)]


# ------------------------------------------------------------------------------------- views


def views_transform(scene: Scene, generator: torch.Generator | None, *, cfg) -> dict[str, Any]:
    from objdisc.data.views import make_views_sample

    return make_views_sample(scene, cfg, generator if generator is not None else torch.Generator().manual_seed(0))


def decode_chunked(decode, latent: Any, origins: Tensor, dirs: Tensor, chunk: int) -> dict[str, Tensor]:
    """``decode(latent, origins, dirs)`` over [B,P,3] rays in chunks of ``chunk`` rays, concatenated
    along P. ``decode`` is a scene model's ``decode`` or ``decode_slots`` (or a model, meaning its
    ``decode``)."""
    decode = getattr(decode, "decode", decode)
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, origins.shape[1], chunk):
        out = decode(latent, origins[:, start : start + chunk], dirs[:, start : start + chunk])
        for key, value in out.items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values, dim=1) for key, values in parts.items()}


class ViewsFamily(Family):
    """Input views and cameras in, colours (and slot weights) of any rays out; evaluated by
    rendering every pixel of the held-out views."""

    name = "views"

    def transform(
        self, data: DatasetConfig, train: bool, where: str = "dataset", model: type | None = None
    ) -> Callable[..., dict[str, Any]]:
        from objdisc.config import build
        from objdisc.data.views import ViewsConfig

        options = dict(data.views)
        if "canonical" not in options and getattr(model, "canonical_frame", None) is not None:
            # A dataset block that does not choose the frame gets the model's (SceneModel.canonical_frame).
            options["canonical"] = model.canonical_frame
        if not train:
            # Evaluation: fixed input views, and every pixel of the held-out views as targets.
            options["num_target_rays"] = 0
            options["targets"] = "others"
            options["input_view_ids"] = list(range(options.get("num_input_views", 1)))
        return functools.partial(views_transform, cfg=build(ViewsConfig, options, f"{where}.views"))

    def check_dataset(self, schema: dict[str, dict[str, Any]], data: DatasetConfig, model: type, names: tuple[str, str]) -> None:
        model_name, dataset = names
        if schema and not {"cam2world", "intrinsics"} <= set(schema):
            raise ValueError(
                f"model '{model_name}' renders novel views and needs cameras, but dataset '{dataset}' has "
                f"none (fields: {', '.join(sorted(schema))}); use a multi-view dataset or a 2D model"
            )
        if data.views.get("canonical") and getattr(model, "world_frame_only", False):
            raise ValueError(
                f"datasets.{dataset}.views.canonical is true, but model '{model_name}' works in world "
                "coordinates only; set it false or leave it unset"
            )
        k = int(data.views.get("num_input_views", 1))
        limit = getattr(model, "max_input_views", None)
        if limit is not None and k > limit:
            raise ValueError(f"datasets.{dataset}.views.num_input_views is {k}, but model '{model_name}' encodes at most {limit}")
        targets = data.views.get("targets", "others")
        need = k + 1 if targets == "others" else k
        views = (schema.get("image", {}).get("shape") or [None])[0]
        if views is not None and views < need:
            raise ValueError(
                f"datasets.{dataset}.views.num_input_views is {k} with targets '{targets}', which needs {need} views "
                f"per scene, but the scenes of '{dataset}' have {views}"
            )

    def eval_batch_size(self, batch_size: int) -> int:
        return 1  # a whole view per scene is rendered, in chunks of rays

    def run(self, model: Model, batch: dict[str, Tensor], step: int, chunk_rays: int) -> ModelOutput:
        latent = model.encode(batch)
        rendered = decode_chunked(model.decode, latent, batch["target_camera_pos"], batch["target_rays"], chunk_rays)
        err = ((rendered["rgb"].float() - batch["target_pixels"]) ** 2).mean()
        return ModelOutput(loss=err, losses={"mse": err}, recon=rendered["rgb"], masks=rendered.get("masks"))

    def metrics(self, batch: dict[str, Tensor], out: ModelOutput) -> dict[str, Tensor]:
        scores = metrics.image_metrics(out.recon.float().clamp(0, 1), batch["target_pixels"])
        if "target_masks" in batch and out.masks is not None:
            seg = metrics.segmentation_metrics(batch["target_masks"], out.masks.float().movedim(-1, 1))
            scores.update({"fg_ari": seg["fg_ari"], "ari": seg["ari"]})
        # The mean-colour baseline: every target pixel painted the input views' mean colour. A model
        # that has learned nothing about the scene but its colour scores about this; the gap
        # between `psnr` and `psnr_mean_colour` is what it learned about the scene's layout.
        target = batch["target_pixels"].float()  # [B,P,3]
        mean_colour = batch["input_images"].float().mean(dim=(1, 3, 4))  # [B,3]
        scores["psnr_mean_colour"] = metrics.psnr(metrics.mse(mean_colour[:, None].expand_as(target), target))
        return scores

    def picture(self, model: Model, batch: dict[str, Tensor], out: ModelOutput, limit: int = 8) -> np.ndarray:
        """Input view, then the first target view rendered, the truth, and their segmentations."""
        n = min(limit, batch["index"].shape[0])
        _, _, _, height, width = batch["input_images"].shape
        pixels = height * width
        full = out.recon.shape[1] >= pixels  # whole views were rendered (evaluation layout)
        rows = []
        for b in range(n):
            row = [viz.to_image(batch["input_images"][b, 0].cpu())]
            if full:
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
        if out.masks is not None and full:
            labels.append("pred seg")
        if "target_masks" in batch and full:
            labels.append("true seg")
        return viz.image_grid(rows, labels=labels[: len(rows[0])])

    def render(
        self, model: Model, dataset: SceneDataset, data: DatasetConfig, cfg: RenderConfig, out_dir: Path, device,
        step: int, progress: bool = True,
    ) -> list[Path]:
        """Per scene, ``scene_<id>.mp4`` and its frames in ``scene_<id>/frames/``."""
        from objdisc.render.video import save_frames, write_mp4

        if cfg.slots:
            self.check_slot_decoding(model)
        videos = []
        for scene_id in tqdm(cfg.scene_ids, desc="render", unit="scene", disable=not progress):
            frames = self.camera_frames(model, dataset, scene_id, cfg, device)
            save_frames(out_dir / f"scene_{scene_id}" / "frames", frames)
            videos.append(write_mp4(out_dir / f"scene_{scene_id}.mp4", frames, fps=cfg.fps, crf=cfg.crf))
        return videos

    @staticmethod
    def check_slot_decoding(model: Model) -> None:
        """``ValueError`` naming the model unless it can render its slots apart (``decode_slots``)."""
        if not getattr(model, "has_slot_decoding", lambda: False)():
            raise ValueError(
                f"render.slots: model {type(model).__name__} cannot render its slots one by one (it has no "
                "decode_slots; ObSuRF and OSRT have); set render.slots to false"
            )

    @staticmethod
    def slot_panels(model: Model, latent: Any, origins: Tensor, dirs: Tensor, masks: Tensor | None, chunk: int,
                    height: int, width: int) -> list[np.ndarray]:
        """One uint8 [H,W,3] picture per slot of what it renders alone (``decode_slots``), over
        white: with the slot's own ``alpha`` where the model gives one, else under its weight in
        the full render (``masks`` [P,S]), as the 2D pictures show each slot."""
        out = decode_chunked(model.decode_slots, latent, origins, dirs, chunk)
        rgb = out["rgb"][0].float().clamp(0, 1).cpu()  # [P,S,3]
        if "alpha" in out:
            alpha = out["alpha"][0].float().clamp(0, 1).cpu()
        elif masks is not None:
            alpha = masks.float().cpu()
        else:
            alpha = torch.ones(rgb.shape[:2])
        shown = rgb * alpha[..., None] + (1.0 - alpha[..., None])
        return [
            np.round(shown[:, s].reshape(height, width, 3).numpy() * 255).astype(np.uint8) for s in range(rgb.shape[1])
        ]

    @torch.no_grad()
    def camera_frames(self, model: Model, dataset: SceneDataset, scene_id: int, cfg: RenderConfig, device) -> list[np.ndarray]:
        """The camera moves along ``cfg.motion`` around the scene; the input views are encoded once
        and each frame is decoded in chunks of rays: colour, slot segmentation, and with ``fade``
        a blend from colour into segmentation; with ``slots`` one more panel per slot, what the
        slot renders alone (``slot_panels``)."""
        from objdisc.data.views import make_render_rays
        from objdisc.render.motions import camera_path, ease_fade

        if cfg.slots:
            self.check_slot_decoding(model)
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
            pose = torch.from_numpy(poses[f]).float().to(device)
            origins, dirs = make_render_rays(pose, torch.from_numpy(ks[f]).float().to(device), height, width, transform)
            out = decode_chunked(model.decode, latent, origins.reshape(1, -1, 3), dirs.reshape(1, -1, 3), cfg.chunk_rays)
            rgb = out["rgb"][0].float().clamp(0, 1).reshape(height, width, 3).cpu().numpy()
            colour = np.round(rgb * 255).astype(np.uint8)
            panels = [input_image, colour]
            labels = ["input", "render"]
            if "masks" in out:
                weights = out["masks"][0].float().cpu()
                seg = viz.colorize_ids((weights.argmax(-1) + 1).reshape(height, width), weights.shape[-1] + 1)
                if cfg.fade:  # blend colour into segmentation along the fade curve
                    a = float(ease_fade(f / max(cfg.num_frames - 1, 1)))
                    panels[1] = np.round((1 - a) * colour + a * seg).astype(np.uint8)
                panels.append(seg)
                labels.append("segmentation")
            if cfg.slots:
                slots = self.slot_panels(
                    model, latent, origins.reshape(1, -1, 3), dirs.reshape(1, -1, 3),
                    out["masks"][0] if "masks" in out else None, cfg.chunk_rays, height, width,
                )
                panels += slots
                labels += [f"slot {s}" for s in range(len(slots))]
            frames.append(viz.image_grid([panels], labels=labels))
        return frames


IMAGE = ImageFamily()
VIEWS = ViewsFamily()
FAMILIES = {f.name: f for f in (IMAGE, VIEWS)}

__all__ = ["FAMILIES", "Family", "IMAGE", "ImageFamily", "VIEWS", "ViewsFamily", "decode_chunked"]
