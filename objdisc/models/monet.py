"""MONet (Burgess et al. 2019, "MONet: Unsupervised Scene Decomposition and Representation").

    image ─┬▶ attention network (U-Net on [image, log s_k]) ─▶ α_k      k = 1 … K − 1, recurrently:
           │     m_k = s_{k−1} α_k,  s_k = s_{k−1} (1 − α_k),  m_K = s_{K−1}    (stick-breaking, s_0 = 1)
           └▶ component VAE, for every k at once:
                 encoder([image, log m_k]) ─▶ q(z_k) = N(μ_k, σ_k) ─▶ z_k
                 spatial-broadcast decoder(z_k) ─▶ x̃_k (sigmoid RGB), mask logits m̃_k
    loss = −Σ_pixels log Σ_k m_k N(x; x̃_k, σ_k²) + β Σ_k KL(q(z_k) ‖ N(0, I)) + γ KL(m ‖ softmax_k m̃)
    recon = Σ_k m_k x̃_k;  masks = m (the attention masks, background included)

The first component is the background: its pixel σ is ``bg_std`` (0.09), the others' ``fg_std``
(benchmark 0.15, paper 0.11). β = γ = 0.5. Optimisation (the ``train:`` block): RMSprop 1e-4,
constant, no clipping (benchmark batch 64, 1M steps).

Choices that differ from the ClevrTex benchmark's re-implementation (``ool/picture/models/monet.py``):

* The mixture is taken per colour channel there (``component="channel"``, kept as the default
  for the benchmark preset); the paper's per-pixel mixture is ``component="pixel"``
  (``objdisc.models.blocks.mixture``).
* Its U-Net sizes the last down block's input as 64·min(2^(n−1), 8) whatever the previous block
  gives, so it cannot be built with fewer than 5 blocks; here each block takes what the previous
  one gives (identical for the 5- and 6-block networks it builds).
* The component VAE runs on all K masks as one batch (the same numbers as its loop over k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objdisc.models.base import Model, ModelOutput, data_input
from objdisc.models.blocks.broadcast import SpatialBroadcastDecoder
from objdisc.models.blocks.mixture import kl_normal, mixture_nll, stick_breaking
from objdisc.models.blocks.unet import UNet


@dataclass
class MONetConfig:
    """Defaults: the ClevrTex benchmark (``experiments/monet.py``: 128², 11 slots, 6 U-Net blocks).

    The benchmark passes the number of U-Net blocks (6 at 128², "5 for other datasets" at 64²); here
    it follows the image so that the bottleneck is 4×4 (``unet_blocks`` = 0), which gives both."""

    image_size: int = data_input("image_size", 128)
    num_slots: int = data_input("num_slots", 11)
    unet_blocks: int = 0  # 0: log2(image_size) − 1, a 4×4 bottleneck (6 at 128², 5 at the paper's 64²)
    unet_channels: int = 64  # ngf: block i has ngf·min(2^i, 8) channels
    unet_mlp: int = 128
    z_dim: int = 16
    encoder_channels: tuple[int, ...] = (32, 32, 64, 64)  # 3×3 stride-2 convs
    encoder_hidden: int = 256
    decoder_channels: int = 32
    decoder_layers: int = 4
    decoder_resolution: int = 0  # 0: decode at the image size; else decode r×r, resized bilinearly (CPU economy)
    bg_std: float = 0.09
    fg_std: float = 0.15  # paper: 0.11
    beta: float = 0.5  # weight of the latent KL
    gamma: float = 0.5  # weight of the mask KL
    component: Literal["pixel", "channel"] = "channel"

    def __post_init__(self) -> None:
        self.encoder_channels = tuple(self.encoder_channels)
        for name in ("image_size", "num_slots", "unet_channels", "z_dim", "decoder_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"MONetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_slots < 2:
            raise ValueError(f"MONet needs at least 2 slots (a background and an object), got {self.num_slots}")
        if self.unet_blocks < 0:
            raise ValueError(f"MONetConfig.unet_blocks must be >= 0 (0: automatic), got {self.unet_blocks}")
        if self.component not in ("pixel", "channel"):
            raise ValueError(f"MONetConfig.component must be 'pixel' or 'channel', got {self.component!r}")

    @property
    def blocks(self) -> int:
        return self.unet_blocks or max(1, int(round(math.log2(self.image_size))) - 1)


class AttentionNetwork(nn.Module):
    """α_k = σ(U-Net([image, log s_{k−1}])), returned as (log α_k, log(1 − α_k))."""

    def __init__(self, cfg: MONetConfig) -> None:
        super().__init__()
        widths = [cfg.unet_channels * min(2**i, 8) for i in range(cfg.blocks)]
        self.unet = UNet(4, widths, (cfg.image_size, cfg.image_size), "instance", cfg.unet_mlp, out_channels=1)

    def forward(self, image: Tensor, log_scope: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.unet(torch.cat([image, log_scope], dim=1))
        return F.logsigmoid(logits), F.logsigmoid(-logits)


class ComponentEncoder(nn.Module):
    """[image, log m_k] ─▶ stride-2 3×3 convs (ReLU) ─▶ MLP ─▶ μ, log σ of z_k."""

    def __init__(self, cfg: MONetConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, side = 4, cfg.image_size
        for width in cfg.encoder_channels:
            layers += [nn.Conv2d(in_ch, width, 3, stride=2, padding=1), nn.ReLU()]
            in_ch, side = width, (side + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(in_ch * side * side, cfg.encoder_hidden), nn.ReLU(), nn.Linear(cfg.encoder_hidden, 2 * cfg.z_dim)
        )

    def forward(self, image: Tensor, log_mask: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_std = self.mlp(self.convs(torch.cat([image, log_mask], dim=1))).chunk(2, dim=1)
        return mu, log_std.exp()


class MONet(Model):
    def __init__(self, cfg: MONetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or MONetConfig()
        self.attention = AttentionNetwork(cfg)
        self.encoder = ComponentEncoder(cfg)
        side = cfg.image_size
        self.decoder = SpatialBroadcastDecoder(
            cfg.z_dim, (side, side), [cfg.decoder_channels] * cfg.decoder_layers, kernel=3, final_kernel=1, out_channels=4,
            decode_hw=(cfg.decoder_resolution,) * 2 if cfg.decoder_resolution else None,
        )
        stds = torch.full((cfg.num_slots,), cfg.fg_std)
        stds[0] = cfg.bg_std
        self.register_buffer("pixel_std", stds, persistent=False)

    def attend(self, image: Tensor) -> Tensor:
        """The K log attention masks [B, K, 1, H, W] of the recurrent stick-breaking process."""
        log_scope = torch.zeros_like(image[:, :1])
        pairs = []
        for _ in range(self.cfg.num_slots - 1):
            log_a, log_not_a = self.attention(image, log_scope)
            pairs.append((log_a, log_not_a))
            log_scope = log_scope + log_not_a
        log_masks, _ = stick_breaking(pairs)
        return torch.stack(log_masks, dim=1)

    def forward(self, batch: dict[str, Tensor], step: int = 0) -> ModelOutput:
        image = batch["image"]
        cfg = self.cfg
        b, c, h, w = image.shape
        if (h, w) != (cfg.image_size, cfg.image_size):
            raise ValueError(f"MONet was built for {cfg.image_size}² images, got {h}×{w}")
        k = cfg.num_slots
        log_masks = self.attend(image)  # [B,K,1,H,W]
        images = image.unsqueeze(1).expand(b, k, c, h, w).reshape(b * k, c, h, w)
        mu, std = self.encoder(images, log_masks.reshape(b * k, 1, h, w))
        z = mu + std * torch.randn_like(std)
        decoded = self.decoder(z).view(b, k, 4, h, w)
        means = torch.sigmoid(decoded[:, :, :3])
        log_masks_dec = decoded[:, :, 3:].log_softmax(dim=1)  # [B,K,1,H,W]

        nll, _ = mixture_nll(image, means, log_masks, self.pixel_std, cfg.component)
        kl_z = kl_normal(mu, std).sum(1).view(b, k).sum(1)
        masks = log_masks.exp()
        kl_mask = (masks * (log_masks - log_masks_dec)).flatten(1).sum(1)
        loss = (nll + cfg.beta * kl_z + cfg.gamma * kl_mask).mean()
        recon = (masks * means).sum(1)
        return ModelOutput(
            loss=loss,
            losses={"nll": nll.mean().detach(), "kl_z": kl_z.mean().detach(), "kl_mask": kl_mask.mean().detach()},
            recon=recon.detach().clamp(0, 1),
            masks=masks[:, :, 0].detach(),
            slots=mu.view(b, k, -1).detach(),
            slot_rgb=means.detach(),
            extras={"decoded_masks": log_masks_dec[:, :, 0].exp().detach()},
        )


PRESETS = {
    "benchmark": MONetConfig(),
    "paper": MONetConfig(fg_std=0.11),  # the paper's σ_fg; 5 U-Net blocks at its 64² images
    # The proving ground (64² sprites, 2 CPU cores): a narrow U-Net and decoder, decoded at 32².
    # The attention U-Net runs K − 1 times a step and took 3/4 of the CPU time at 16 channels; at 8
    # (and batch 8) a step costs a third, so three times the steps fit the 15-minute budget.
    "cpu": MONetConfig(unet_channels=8, decoder_channels=16, decoder_resolution=32, component="pixel"),
}
