"""What a model's ``forward`` returns: everything the loop, the metrics, the pictures and the
renders read (``objdisc.models.base`` describes the protocol around it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ModelOutput:
    loss: Tensor  # scalar that the loop minimises
    losses: dict[str, Tensor] = field(default_factory=dict)  # every named term (NLL, each KL, penalties, GECO β), logged
    recon: Tensor | None = None  # IMAGE: [B,3,H,W] in [0,1]; VIEWS: [B,P,3] colours of the target rays
    masks: Tensor | None = None  # IMAGE: soft [B,K,H,W]; VIEWS: [B,P,K] slot weights
    masks_have_background: bool = True  # False: object-only masks (glimpse models); the background is 1 − Σ masks
    slots: Tensor | None = None  # [B,K,D] (None for models without slots, e.g. SRT)
    slot_rgb: Tensor | None = None  # IMAGE: [B,K,3,H,W] in [0,1], what each slot draws
    boxes: Tensor | None = None  # IMAGE: [B,K,4] (x0, y0, x1, y1) in pixels, for models with glimpses
    presence: Tensor | None = None  # [B,K] in [0,1]: whether each slot/cell holds an object (count = Σ round)
    extras: dict[str, Tensor] = field(default_factory=dict)  # model-specific, for its own pictures
