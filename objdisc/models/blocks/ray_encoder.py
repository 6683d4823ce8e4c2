"""SRT's ray encoder (stelzner/srt): Fourier features of the camera position and ray direction.

A ray (origin o, unit direction d) becomes ``[PE(o; n_pos from s_pos), PE(d; n_ray from s_ray)]``
with ``objdisc.geometry.positional_encoding`` (sines then cosines, no raw coordinates). The papers
use 15 + 15 octaves with positions from 2⁻⁵ (scene units of ~10-40 need the low frequencies) and
directions from 2⁰: 90 + 90 = 180 features.

``encode_points`` is the position half alone, for 3D points: V-SRT's NeRF decoder queries points
o + t·d with their encoding (90 features) and no view direction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from objdisc.geometry import positional_encoding


class RayEncoder(nn.Module):
    def __init__(
        self, pos_octaves: int = 15, pos_start_octave: int = -5, ray_octaves: int = 15, ray_start_octave: int = 0
    ) -> None:
        super().__init__()
        self.pos_octaves = pos_octaves
        self.pos_start_octave = pos_start_octave
        self.ray_octaves = ray_octaves
        self.ray_start_octave = ray_start_octave

    @property
    def out_dim(self) -> int:
        return 2 * 3 * (self.pos_octaves + self.ray_octaves)

    @property
    def point_dim(self) -> int:
        """Width of ``encode_points``: 2·3·pos_octaves (90 for 15 octaves)."""
        return 2 * 3 * self.pos_octaves

    def encode_points(self, points: Tensor) -> Tensor:
        """3D points [...,3] → [..., point_dim]: the camera-position encoding (octaves from
        ``pos_start_octave``), without a direction."""
        return positional_encoding(points, self.pos_octaves, self.pos_start_octave)

    def forward(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """Rays [...,3] (origins broadcast against dirs) → features [..., out_dim]."""
        pos = positional_encoding(origins, self.pos_octaves, self.pos_start_octave)
        ray = positional_encoding(dirs, self.ray_octaves, self.ray_start_octave)
        return _cat_broadcast(pos, ray)

    def encode_image(self, camera_pos: Tensor, rays: Tensor) -> Tensor:
        """Per-pixel features of whole views, channels first: camera_pos [N,3], rays [N,H,W,3] →
        [N, out_dim, H, W] (the position encoding is broadcast over the pixels)."""
        features = self(camera_pos[:, None, None, :], rays)
        return features.permute(0, 3, 1, 2)


def _cat_broadcast(a: Tensor, b: Tensor) -> Tensor:
    """Concatenate along the last axis after broadcasting the leading axes."""
    lead = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*lead, a.shape[-1]), b.expand(*lead, b.shape[-1])], dim=-1)
