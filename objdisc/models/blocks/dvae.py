"""The discrete VAE of SLATE (Singh et al. 2022, after DALL·E's dVAE): an image becomes a grid of
tokens from a vocabulary of ``vocab_size`` codes, one token per 4×4 patch.

    image [B,3,H,W] ─▶ Conv 4×4 stride 4 ─▶ 6 × Conv 1×1 ─▶ Conv 1×1 ─▶ log-probabilities [B,V,H/4,W/4]
    one-hot / relaxed tokens [B,V,H/4,W/4] ─▶ Conv 1×1 ─▶ Conv 3×3 ─▶ 2 × Conv 1×1 ─▶ Conv 1×1 (×4 ch)
        ─▶ PixelShuffle 2 ─▶ Conv 3×3 ─▶ 2 × Conv 1×1 ─▶ Conv 1×1 (×4 ch) ─▶ PixelShuffle 2 ─▶ Conv 1×1 ─▶ RGB

Every hidden convolution is bias-free, followed by GroupNorm with one group (a per-sample
LayerNorm over channels and positions) and ReLU; its weights are Kaiming-uniform. The two output
convolutions have biases and Xavier-uniform weights (HHousen's / SLATE's ``conv2d`` helper).

Training relaxes the tokens with the Gumbel-softmax (``relaxed_tokens``: ``F.gumbel_softmax`` over
the vocabulary axis at temperature τ); the transformer's targets are hard samples of the same
distribution (``hard_tokens``), always detached: the token pathway never trains the encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvGN(nn.Sequential):
    """Conv (no bias, Kaiming-uniform) → GroupNorm(1 group) → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False)
        nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
        super().__init__(conv, nn.GroupNorm(1, out_channels), nn.ReLU())


def _out_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class DVAE(nn.Module):
    """Encoder to ``vocab_size`` token log-probabilities on a 4×-downsampled grid, decoder back.

    Args:
        vocab_size: number of discrete codes V (SLATE: 4096).
        hidden: channels of every hidden convolution (SLATE: 64).
        channels: image channels.
    """

    downsample = 4

    def __init__(self, vocab_size: int, hidden: int = 64, channels: int = 3) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.encoder = nn.Sequential(
            ConvGN(channels, hidden, 4, 4),
            *[ConvGN(hidden, hidden, 1) for _ in range(6)],
            _out_conv(hidden, vocab_size),
        )
        self.decoder = nn.Sequential(
            ConvGN(vocab_size, hidden, 1),
            ConvGN(hidden, hidden, 3, 1, 1),
            ConvGN(hidden, hidden, 1),
            ConvGN(hidden, hidden, 1),
            ConvGN(hidden, hidden * 4, 1),
            nn.PixelShuffle(2),
            ConvGN(hidden, hidden, 3, 1, 1),
            ConvGN(hidden, hidden, 1),
            ConvGN(hidden, hidden, 1),
            ConvGN(hidden, hidden * 4, 1),
            nn.PixelShuffle(2),
            _out_conv(hidden, channels),
        )

    def encode(self, image: Tensor) -> Tensor:
        """image [B,C,H,W] → token log-probabilities [B,V,H/4,W/4] (log-softmax over V)."""
        h, w = image.shape[-2:]
        if h % self.downsample or w % self.downsample:
            raise ValueError(f"DVAE: image size {h}×{w} is not a multiple of {self.downsample}")
        return F.log_softmax(self.encoder(image), dim=1)

    def decode(self, tokens: Tensor) -> Tensor:
        """tokens [B,V,h,w] (one-hot or relaxed) → image [B,C,4h,4w] (unclamped)."""
        return self.decoder(tokens)


def relaxed_tokens(log_probs: Tensor, tau: float, hard: bool = False) -> Tensor:
    """Gumbel-softmax sample over the vocabulary axis (dim 1) at temperature ``tau``; ``hard``:
    straight-through one-hot."""
    return F.gumbel_softmax(log_probs, tau=tau, hard=hard, dim=1)


def hard_tokens(log_probs: Tensor, tau: float) -> Tensor:
    """Detached token indices [B,h,w] drawn from the Gumbel-perturbed distribution (the argmax of a
    Gumbel-softmax sample; the temperature does not change the argmax)."""
    with torch.no_grad():
        return F.gumbel_softmax(log_probs, tau=tau, hard=True, dim=1).argmax(dim=1)


__all__ = ["ConvGN", "DVAE", "hard_tokens", "relaxed_tokens"]
