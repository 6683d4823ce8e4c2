"""The model protocol: everything the loop, evaluation, pictures and renders
know about a model.

A model is an ``nn.Module`` built from a config dataclass whose defaults are its paper's settings.
It declares its ``family`` (``IMAGE``: one view in, an image out; ``VIEWS``: input views in, any
rays out), and the family owns what differs between the two: the data transform, the evaluation
forward, the metrics, the default pictures and the render frames (``objdisc.models.family``).

What a model may define, each with a default that suits Slot Attention:

* ``forward(batch, step)`` → ``ModelOutput``. ``step`` is the 0-based training step (at
  evaluation: the number of steps the model was trained for), so annealed hyper-parameters are a
  pure function of it (``objdisc.train.schedule.at``), never a counter hidden in the module.
* ``optimizers(train)`` → the optimisers and parameter groups it trains with
  (``objdisc.train.optim``): default one ``train.optimizer`` over all trainable parameters.
* ``after_step(step, out)`` → state updated outside the gradient after each update (the GECO
  multiplier, re-assignment of unused sprites). Keep such state in buffers: buffers are in
  ``state_dict``, hence in every checkpoint, so a resumed run continues bit-exactly.
* ``picture(batch, out, limit)`` → the grid a researcher recognises from the paper; default the
  family's (input, reconstruction, predicted and true segmentation, each slot).

Config fields that come from the data, not from the model's block, are declared with
``data_input`` (Slot Attention's ``resolution`` is the dataset's image size); the registry fills
them in (``objdisc.models.model_config``).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from objdisc.models.family import IMAGE, VIEWS, Family
from objdisc.models.output import ModelOutput
from objdisc.train.optim import OptimizerSpec, ParamGroup

if TYPE_CHECKING:
    import numpy as np

    from objdisc.config import TrainConfig


def data_input(key: str, default: Any) -> Any:
    """A config field filled from the data (``key``: ``image_size``) rather than the model's block."""
    return field(default=default, metadata={"data_input": key})


class Model(nn.Module, metaclass=ABCMeta):
    """Base class of every model; subclasses implement ``forward`` and may override the hooks."""

    family: ClassVar[Family] = IMAGE

    @abstractmethod
    def forward(self, batch: dict[str, Tensor], step: int = 0) -> ModelOutput: ...

    def optimizers(self, train: TrainConfig) -> list[OptimizerSpec]:
        """Default: one optimiser (``train.optimizer``) over every trainable parameter."""
        return [OptimizerSpec([ParamGroup([p for p in self.parameters() if p.requires_grad])])]

    def after_step(self, step: int, out: ModelOutput) -> None:
        """Called after the update of ``step`` without gradients; state lives in buffers."""

    def picture(self, batch: dict[str, Tensor], out: ModelOutput, limit: int = 8) -> np.ndarray:
        return self.family.picture(self, batch, out, limit)


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

    Optional: ``decode_slots`` renders what each slot shows on its own (``objdisc render --slots``
    adds one panel per slot to every frame); models whose slots can be rendered apart (ObSuRF,
    OSRT) override it, ``has_slot_decoding()`` says whether a model does.
    """

    family: ClassVar[Family] = VIEWS
    max_input_views: ClassVar[int | None] = None  # how many input views the encoder takes (None: any)
    # The frame of the batches when the dataset's ``views`` block does not set ``canonical``: True
    # for SRT's canonical frame of the first input camera, False for world coordinates, None for
    # ViewsConfig's default (world).
    canonical_frame: ClassVar[bool | None] = None
    # True where the model cannot work in the canonical frame at all (ObSuRF: its ground plane is
    # z = 0 of the world): a dataset block that sets views.canonical: true is refused before training.
    world_frame_only: ClassVar[bool] = False

    @abstractmethod
    def encode(self, batch: dict[str, Tensor]) -> Tensor | dict[str, Tensor]: ...

    @abstractmethod
    def decode(self, latent, origins: Tensor, dirs: Tensor) -> dict[str, Tensor]: ...

    def decode_slots(self, latent, origins: Tensor, dirs: Tensor) -> dict[str, Tensor]:
        """What each of the S slots renders on its own, for rays origins / dirs [B,P,3]: ``rgb``
        [B,P,S,3] in [0, 1] and, where a slot alone has a coverage, ``alpha`` [B,P,S] (the colour
        is then not premultiplied: a picture shows rgb·alpha + background·(1 − alpha)). How the
        slot renders combine into ``decode``'s render is the model's composition rule (its
        ``decode_slots`` docstring says). Rays independent, like ``decode``."""
        raise NotImplementedError(
            f"model {type(self).__name__} cannot render its slots one by one (it has no decode_slots)"
        )

    @classmethod
    def has_slot_decoding(cls) -> bool:
        """Whether the model overrides ``decode_slots``."""
        return cls.decode_slots is not SceneModel.decode_slots


__all__ = ["Model", "ModelOutput", "SceneModel", "data_input"]
