"""Building blocks shared by several models."""

from objdisc.models.blocks.position import SoftPositionEmbed, build_grid
from objdisc.models.blocks.slot_attention import SlotAttention

__all__ = ["SlotAttention", "SoftPositionEmbed", "build_grid"]
