"""Convolution stacks the models are built from.

* ``conv_relu_stack`` — the Slot Attention paper's image encoder: ``layers`` × (5×5 convolution,
  "same" padding, ReLU) at full resolution (Slot Attention, Efficient-MORL).
* ``ConvNormStack`` — encoders: per stage Conv2d → CELU → GroupNorm (SPAIR's backbone, SPACE's
  image and glimpse encoders, GNM's image encoder).
* ``SubPixelStack`` — the glimpse decoders: per stage Conv2d to ``out·u²`` channels →
  PixelShuffle(u) → CELU → GroupNorm, growing a 1×1 latent into a glimpse (SPACE's glimpse and
  mask decoders, GNM's glimpse and background decoders).
(The spatial broadcast decoders of SPAIR are ``blocks.broadcast.SpatialBroadcastDecoder``.)

In the last two, a stage is a tuple ``(out_channels, kernel, stride_or_upscale, groups)``.
GroupNorm's group count is reduced to gcd(groups, channels) so that the stacks stay valid when a
CPU preset narrows them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor, nn

Stage = tuple[int, int, int, int]


def group_count(groups: int, channels: int) -> int:
    """The GroupNorm group count actually used: ``groups`` when it divides ``channels``, else their gcd."""
    return max(1, math.gcd(groups, channels))


def scaled(channels: int, width: float) -> int:
    """A channel count narrowed by ``width`` (at least 1)."""
    return max(1, round(channels * width))


def fit_upscales(upscales: Sequence[int], size: int) -> tuple[int, ...]:
    """Upscale factors whose product is ``size``: the factors of ``upscales`` halved, last first,
    until they fit (a decoder designed for 128 px drawing 64 px). ValueError if they cannot."""
    ups = list(upscales)
    while math.prod(ups) > size and any(u % 2 == 0 for u in ups):
        i = max(i for i, u in enumerate(ups) if u % 2 == 0)
        ups[i] //= 2
    if math.prod(ups) != size:
        raise ValueError(f"upscale factors {tuple(upscales)} cannot be reduced to a product of {size}")
    return tuple(ups)


def conv_relu_stack(in_channels: int, channels: int, layers: int = 4, kernel: int = 5) -> nn.Sequential:
    """``layers`` × (Conv2d(kernel, "same" padding) → ReLU), no downsampling (odd ``kernel``)."""
    if kernel % 2 == 0 or layers < 1:
        raise ValueError(f"conv_relu_stack needs an odd kernel and at least one layer, got kernel {kernel}, layers {layers}")
    modules: list[nn.Module] = []
    for i in range(layers):
        modules += [nn.Conv2d(in_channels if i == 0 else channels, channels, kernel, padding=kernel // 2), nn.ReLU()]
    return nn.Sequential(*modules)


class ConvNormStack(nn.Sequential):
    """Per stage ``(out, kernel, stride, groups)``: Conv2d(kernel, stride, padding (kernel − 1) // 2;
    "same" at stride 1, also for even kernels) → activation → GroupNorm; ``stride = 0`` is a valid
    convolution (stride 1, no padding).
    ``final_norm=False`` leaves the last convolution without activation and norm."""

    def __init__(
        self, in_channels: int, stages: Sequence[Stage], final_norm: bool = True, activation: Callable[[], nn.Module] = nn.CELU
    ) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        for i, (out, kernel, stride, groups) in enumerate(stages):
            if stride == 0:
                layers.append(nn.Conv2d(channels, out, kernel, 1, 0))
            elif stride == 1 and kernel % 2 == 0:  # "same" for an even kernel: pad one more after
                before = (kernel - 1) // 2
                layers += [nn.ZeroPad2d((before, kernel - 1 - before) * 2), nn.Conv2d(channels, out, kernel, 1, 0)]
            else:
                layers.append(nn.Conv2d(channels, out, kernel, stride, (kernel - 1) // 2))
            if i < len(stages) - 1 or final_norm:
                layers += [activation(), nn.GroupNorm(group_count(groups, out), out)]
            channels = out
        super().__init__(*layers)
        self.out_channels = channels


class SubPixelStack(nn.Sequential):
    """Per stage ``(out, kernel, upscale, groups)``: Conv2d(kernel, padding (kernel − 1) // 2) to
    ``out·upscale²`` channels → PixelShuffle(upscale) when upscale > 1 → activation → GroupNorm.
    ``final_norm=False`` leaves the last stage without activation and norm."""

    def __init__(
        self, in_channels: int, stages: Sequence[Stage], final_norm: bool = True, activation: Callable[[], nn.Module] = nn.CELU
    ) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        for i, (out, kernel, upscale, groups) in enumerate(stages):
            layers.append(nn.Conv2d(channels, out * upscale**2, kernel, 1, (kernel - 1) // 2))
            if upscale > 1:
                layers.append(nn.PixelShuffle(upscale))
            if i < len(stages) - 1 or final_norm:
                layers += [activation(), nn.GroupNorm(group_count(groups, out), out)]
            channels = out
        super().__init__(*layers)
        self.out_channels = channels
        self.upscale = math.prod(s[2] for s in stages)

    def forward(self, z: Tensor) -> Tensor:
        """z [N, D] (or [N, D, 1, 1]) → [N, out, u, u] with u the product of the upscales."""
        return super().forward(z.reshape(z.shape[0], -1, 1, 1))


__all__ = ["ConvNormStack", "Stage", "SubPixelStack", "conv_relu_stack", "fit_upscales", "group_count", "scaled"]
