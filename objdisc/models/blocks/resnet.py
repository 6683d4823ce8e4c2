"""The ResNet feature extractor of ObSuRF's encoder (stelzner/obsurf): ResNet-18-style BasicBlocks
with BatchNorm, **no max-pool**, and constant widths instead of ResNet's doubling.

Layout: stem conv 7×7 (no bias) → BN → ReLU, then four stages of BasicBlocks with widths
(h, h, h, c) and block counts (2, 2, 2, 2). ``downsample`` stride-2 steps are spent in order on the
stem, stage 2, stage 3, stage 4 (stage 1 never strides): ObSuRF's 2 turns 240×320 into 60×80, a
map fine enough to read per-pixel colour features from. Kaiming-normal (fan_out) convolutions,
BN weight 1 and bias 0, as torchvision does.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """conv3×3(stride) – BN – ReLU – conv3×3 – BN, plus a (1×1 conv – BN) shortcut when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """[B, in_channels, H, W] → [B, widths[-1], H / 2^downsample, W / 2^downsample] (rounded up)."""

    def __init__(
        self,
        in_channels: int,
        stem_channels: int,
        widths: Sequence[int],
        blocks: Sequence[int] = (2, 2, 2, 2),
        downsample: int = 2,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError(f"ResNet: widths {tuple(widths)} and blocks {tuple(blocks)} differ in length")
        if downsample > len(widths):  # stem + every stage but the first
            raise ValueError(f"ResNet: downsample {downsample} exceeds the {len(widths)} stride-2 slots")
        budget = downsample

        def next_stride() -> int:
            nonlocal budget
            if budget > 0:
                budget -= 1
                return 2
            return 1

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 7, stride=next_stride(), padding=3, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
        )
        stages = []
        channels = stem_channels
        for i, (width, count) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else next_stride()
            layers = [BasicBlock(channels, width, stride)]
            layers += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))
