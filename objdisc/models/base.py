"""The model protocol (design.md section 5): what the loop, metrics, pictures and renders rely on.

Every model is an ``nn.Module`` built from a config dataclass whose defaults are its paper's
settings. ``forward(batch)`` returns a ``ModelOutput``. Models declare which batch layout they
take through ``inputs``:

* ``"image"`` (2D): ``batch["image"]`` float [B,3,H,W] in [0,1]; ``batch["mask"]`` long [B,H,W]
  instance ids (evaluation only).
* ``"views"`` (3D): the layout built by ``objdisc.data.views.make_views_sample`` (input views,
  cameras, sampled target rays).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from torch import Tensor, nn


@dataclass
class ModelOutput:
    loss: Tensor  # scalar that the loop minimises
    losses: dict[str, Tensor] = field(default_factory=dict)  # named parts, for logging
    recon: Tensor | None = None  # 2D: [B,3,H,W] in [0,1]; 3D: [B,P,3] colours of the target rays
    masks: Tensor | None = None  # 2D: soft [B,K,H,W] summing to 1 over K; 3D: [B,P,K] slot weights
    slots: Tensor | None = None  # [B,K,D] (None for models without slots, e.g. SRT)


class Model(nn.Module, metaclass=ABCMeta):
    """Base class: subclasses set ``inputs`` and implement ``forward``."""

    inputs: ClassVar[Literal["image", "views"]] = "image"

    @abstractmethod
    def forward(self, batch: dict[str, Tensor]) -> ModelOutput: ...


class SceneModel(Model):
    """3D scene-representation models (SRT, OSRT, ObSuRF): encode input views once, then decode
    any rays. ``forward`` = encode + decode on the batch's target rays + the paper's loss.

    The ``"views"`` batch (built by ``objdisc.data.views``; B scenes, K input views, P target rays):

    ==================== ================== =================================================
    key                  shape, dtype       meaning
    ==================== ================== =================================================
    input_images         [B,K,3,H,W] f32    input views in [0,1]
    input_camera_pos     [B,K,3] f32        camera centres
    input_rays           [B,K,H,W,3] f32    unit ray directions through pixel centres
    input_cam2world      [B,K,4,4] f32      OpenCV cameras (in the frame of the rays)
    input_intrinsics     [B,K,3,3] f32      pinhole K in pixels
    input_masks          [B,K,H,W] i64      instance ids, 0 = background (when known)
    input_depths         [B,K,H,W] f32      distance along the ray (when known)
    target_pixels        [B,P,3] f32        colours of the sampled target rays in [0,1]
    target_camera_pos    [B,P,3] f32        ray origins
    target_rays          [B,P,3] f32        unit directions
    target_masks         [B,P] i64          instance ids of the target rays (when known)
    target_depths        [B,P] f32          distance along the ray (when known)
    transform            [B,4,4] f32        world → model frame (identity unless canonical)
    ==================== ================== =================================================

    ``decode`` returns a dict with ``rgb`` [B,P,3] and, where the model has them, ``masks``
    [B,P,K] (per-ray slot weights summing to 1) and ``depth`` [B,P]. Rendering calls ``decode`` in
    chunks of rays, so ``decode`` must treat rays independently.
    """

    inputs: ClassVar[Literal["image", "views"]] = "views"

    @abstractmethod
    def encode(self, batch: dict[str, Tensor]) -> Tensor | dict[str, Tensor]: ...

    @abstractmethod
    def decode(self, latent, origins: Tensor, dirs: Tensor) -> dict[str, Tensor]: ...
