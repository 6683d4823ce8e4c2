"""GENESIS-v2 (Engelcke, Parker Jones & Posner 2021, "GENESIS-V2: Inferring Unordered Object
Representations without Iterative Refinement"), written from the paper.

    image ─▶ U-Net encoder ─▶ features f
    f ─▶ conv ─▶ semi-convolutional embeddings ζ_i = g·W f_i + (0, …, 0, x_i, y_i)     (g learned, starts at 0)
    instance-colouring stick-breaking process (IC-SBP), s_0 = 1, for k = 1 … K − 1:
        seed pixel = argmax_i u_i s_{k−1,i}  (u ~ U(0, 1) per pixel, drawn once per image)
        α_k,i = exp(−‖ζ_i − ζ_seed‖² / σ)  (Gaussian kernel, σ learned), clamped to [0.01, 0.99]
        m_k = s_{k−1} α_k,  s_k = s_{k−1} (1 − α_k);   m_K = s_{K−1}
    per mask: mask-weighted mean of a feature head ─▶ LayerNorm + MLP ─▶ q(z_k) = N(μ_k, σ_k) ─▶ z_k
    z_k ─▶ broadcast on an (H/16)² grid + coordinates ─▶ 4 × (5×5 transposed conv, stride 2,
           GroupNorm(8), ReLU) ─▶ 1×1 conv ─▶ x̃_k (sigmoid RGB), mask logits;  m̃ = softmax_k
    err = −Σ_pixels log Σ_k m̃_k N(x; x̃_k, 0.7²)
    KL  = Σ_k [log q(z_k) − log p(z_k | z_{<k})]   (one sample; p: N(0, I) for k = 1, then an
          autoregressive LSTM prior: μ = tanh(·), σ = sigmoid(· + 4) + 1e-4)
          + Σ_pixels Σ_k m_k (log m_k − log m̃_k)   (the masks' KL: IC-SBP masks m vs decoder masks m̃)
    loss = err + β KL, β from GECO (``objdisc.models.blocks.geco``): goal 0.5655 per element × 3HW,
           step 1e-5 · 64²/(HW), α 0.99, β₀ 1, β ≥ 1e-10, ×10 faster once the goal is met
    recon = Σ_k m̃_k x̃_k;  masks = m̃ (the decoder's masks; the IC-SBP masks are in ``extras``)

Sizes (ClevrTex benchmark): K 11, 128², U-Net of log2(128) − 1 = 6 blocks with c = 64 channels
(c, c, c, 2c, 2c, 2c), features and latents 64, colour embedding 8, prior LSTM 256. Optimisation
(the ``train:`` block): Adam 1e-4, no clipping, batch 32, 500k steps.

Differences from the code the ClevrTex benchmark adapted:

* GECO's β moves only after a training update (``after_step``); the benchmark's copy also moved
  it in every validation forward, and kept its moving average out of checkpoints.
* The mixture is per colour channel there (``component="channel"``, kept for the benchmark
  preset); the paper's per-pixel mixture is ``component="pixel"``.
* Seeds are gathered for the whole batch at once (the same pixels as its per-image loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objdisc import viz
from objdisc.models.base import Model, ModelOutput, data_input
from objdisc.models.blocks.broadcast import coordinate_channels
from objdisc.models.blocks.geco import GECO
from objdisc.models.blocks.mixture import log_normal, mixture_nll
from objdisc.models.blocks.unet import UNet, UNetBlock


@dataclass
class GenesisV2Config:
    """Defaults: the ClevrTex benchmark (``experiments/genesisv2.py``, 128², K 11)."""

    image_size: int = data_input("image_size", 128)
    num_slots: int = data_input("num_slots", 11)
    feat_dim: int = 64  # encoder features and latent size
    colour_dim: int = 8  # semi-convolutional embedding
    unet_blocks: int = 0  # 0: log2(image_size) − 1
    pixel_std: float = 0.7
    semiconv: bool = True
    autoregressive_prior: bool = True
    component: Literal["pixel", "channel"] = "channel"
    geco_goal: float = 0.5655  # per element: the goal is geco_goal · 3 · H · W (README: 0.5 for ClevrTex)
    geco_step: float = 1e-5  # at 64²; scaled by 64² / (H·W)
    geco_alpha: float = 0.99
    geco_beta_init: float = 1.0
    geco_beta_min: float = 1e-10
    geco_speedup: float = 10.0

    def __post_init__(self) -> None:
        for name in ("image_size", "num_slots", "feat_dim", "colour_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"GenesisV2Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_slots < 2:
            raise ValueError(f"GENESIS-v2 needs at least 2 slots, got {self.num_slots}")
        if self.image_size % 16:
            raise ValueError(f"GENESIS-v2 decodes from an (H/16)² grid: image_size {self.image_size} must be divisible by 16")
        if self.colour_dim < 2:
            raise ValueError("GenesisV2Config.colour_dim must be >= 2 (the last two channels carry the coordinates)")
        if self.component not in ("pixel", "channel"):
            raise ValueError(f"GenesisV2Config.component must be 'pixel' or 'channel', got {self.component!r}")

    @property
    def blocks(self) -> int:
        return self.unet_blocks or int(round(math.log2(self.image_size))) - 1


def encoder_widths(blocks: int, c: int) -> list[int]:
    """c for the first blocks, 2c for the last three (the paper's tables for 4, 5 and 6 blocks)."""
    return [c] * max(blocks - 3, 0) + [2 * c] * min(blocks, 3)


def clamp_straight_through(x: Tensor, low: float, high: float) -> Tensor:
    """Clamped in value, identity for the gradient."""
    return x + (x.clamp(low, high) - x).detach()


class InstanceColouringSBP(nn.Module):
    """IC-SBP with semi-convolutional embeddings and a Gaussian kernel."""

    def __init__(self, cfg: GenesisV2Config, in_channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv2d(in_channels, cfg.colour_dim, 1)
        self.gate = nn.Parameter(torch.zeros(1)) if cfg.semiconv else None
        if cfg.semiconv:
            side = cfg.image_size
            uv = torch.cat([torch.zeros(1, cfg.colour_dim - 2, side, side), coordinate_channels(side, side)], dim=1)
            self.register_buffer("uv", uv, persistent=False)
        # Kernel bandwidth: exp(−d² / σ) = 1/2 at d² = σ ln 2; starts at σ = 1 / (K ln 2).
        self.log_sigma = nn.Parameter(torch.tensor(1.0 / (cfg.num_slots * math.log(2.0))).log())

    def embeddings(self, features: Tensor) -> Tensor:
        x = self.embed(features)
        return self.gate * x + self.uv if self.gate is not None else x

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """features [B,C,H,W] → log masks [B,K,1,H,W], embeddings ζ [B,D,H,W]."""
        zeta = self.embeddings(features)
        b, d = zeta.shape[:2]
        flat = zeta.flatten(2)  # [B,D,N]
        u = torch.rand(b, flat.shape[-1], device=zeta.device, dtype=zeta.dtype)
        sigma = self.log_sigma.exp()
        log_scope = zeta.new_zeros(b, flat.shape[-1])
        log_masks = []
        for _ in range(self.cfg.num_slots - 1):
            seed_index = (u * log_scope.exp()).argmax(dim=1)  # [B]
            seed = flat.gather(2, seed_index.view(b, 1, 1).expand(b, d, 1))  # [B,D,1]
            alpha = torch.exp(-((flat - seed) ** 2).sum(1) / sigma)
            alpha = clamp_straight_through(alpha, 0.01, 0.99)
            log_masks.append(log_scope + torch.log(alpha))
            log_scope = log_scope + torch.log1p(-alpha)
        log_masks.append(log_scope)
        h, w = zeta.shape[-2:]
        return torch.stack(log_masks, dim=1).view(b, -1, 1, h, w), zeta


class ComponentDecoder(nn.Module):
    """z ─▶ broadcast on (H/16)² + coordinates ─▶ 4 × (ConvT 5×5 s2, GroupNorm 8, ReLU) ─▶ 1×1 ─▶ 4."""

    def __init__(self, cfg: GenesisV2Config) -> None:
        super().__init__()
        self.side = cfg.image_size // 16
        self.register_buffer("grid", coordinate_channels(self.side, self.side), persistent=False)
        c = cfg.feat_dim
        widths = [c, c, min(c, 64), min(c, 64)]
        layers: list[nn.Module] = []
        in_ch = cfg.feat_dim + 2
        for width in widths:
            layers += [nn.ConvTranspose2d(in_ch, width, 5, stride=2, padding=2, output_padding=1), nn.GroupNorm(8, width), nn.ReLU()]
            in_ch = width
        layers.append(nn.Conv2d(in_ch, 4, 1))
        self.convs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        n, d = z.shape
        s = self.side
        x = torch.cat([z[:, :, None, None].expand(n, d, s, s), self.grid.to(z.dtype).expand(n, -1, -1, -1)], dim=1)
        return self.convs(x)


class AutoregressivePrior(nn.Module):
    """p(z_1) = N(0, I); p(z_k | z_{<k}) from an LSTM over z_1 … z_{k−1}."""

    def __init__(self, cfg: GenesisV2Config) -> None:
        super().__init__()
        self.lstm = nn.LSTM(cfg.feat_dim, 4 * cfg.feat_dim)
        self.head = nn.Linear(4 * cfg.feat_dim, 2 * cfg.feat_dim)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z [B,K,D] → prior means and stds [B,K,D]."""
        b, k, d = z.shape
        out, _ = self.lstm(z[:, :-1].transpose(0, 1))  # [K−1, B, 4D]
        mu, pre = self.head(out).transpose(0, 1).chunk(2, dim=-1)
        mu = torch.cat([z.new_zeros(b, 1, d), torch.tanh(mu)], dim=1)
        std = torch.cat([z.new_ones(b, 1, d), torch.sigmoid(pre + 4.0) + 1e-4], dim=1)
        return mu, std


class GenesisV2(Model):
    def __init__(self, cfg: GenesisV2Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or GenesisV2Config()
        side = cfg.image_size
        c = min(cfg.feat_dim, 64)
        self.encoder = UNet(3, encoder_widths(cfg.blocks, c), (side, side), "group", 128, out_channels=None)
        f = self.encoder.out_channels
        self.seg_head = UNetBlock(f, cfg.feat_dim, "group")
        self.icsbp = InstanceColouringSBP(cfg, cfg.feat_dim)
        self.feat_head = nn.Sequential(UNetBlock(f, cfg.feat_dim, "group"), nn.Conv2d(cfg.feat_dim, 2 * cfg.feat_dim, 1))
        d2 = 2 * cfg.feat_dim
        self.z_head = nn.Sequential(nn.LayerNorm(d2), nn.Linear(d2, d2), nn.ReLU(), nn.Linear(d2, d2))
        self.decoder = ComponentDecoder(cfg)
        self.prior = AutoregressivePrior(cfg) if cfg.autoregressive_prior else None
        pixels = 3 * side * side
        self.geco = GECO(
            goal=cfg.geco_goal * pixels,
            step_size=cfg.geco_step * (64**2) / (side * side),
            alpha=cfg.geco_alpha,
            beta_init=cfg.geco_beta_init,
            beta_min=cfg.geco_beta_min,
            speedup=cfg.geco_speedup,
        )

    def forward(self, batch: dict[str, Tensor], step: int = 0) -> ModelOutput:
        image = batch["image"]
        cfg = self.cfg
        b, _, h, w = image.shape
        if (h, w) != (cfg.image_size, cfg.image_size):
            raise ValueError(f"GENESIS-v2 was built for {cfg.image_size}² images, got {h}×{w}")
        k, d = cfg.num_slots, cfg.feat_dim
        features = F.relu(self.encoder(image))
        log_att, zeta = self.icsbp(self.seg_head(features))  # [B,K,1,H,W]
        att = log_att.exp()
        pooled = (att * self.feat_head(features).unsqueeze(1)).sum((3, 4)) / (att.sum((3, 4)) + 1e-5)  # [B,K,2D]
        mu, pre = self.z_head(pooled).chunk(2, dim=-1)
        std = F.softplus(pre + 0.5) + 1e-8
        z = mu + std * torch.randn_like(std)

        decoded = self.decoder(z.reshape(b * k, d)).view(b, k, 4, h, w)
        means = torch.sigmoid(decoded[:, :, :3])
        log_masks = decoded[:, :, 3:].log_softmax(dim=1)
        nll, _ = mixture_nll(image, means, log_masks, cfg.pixel_std, cfg.component, normalised=True)

        if self.prior is not None:
            p_mu, p_std = self.prior(z)
        else:
            p_mu, p_std = torch.zeros_like(z), torch.ones_like(z)
        kl_k = (log_normal(z, mu, std) - log_normal(z, p_mu, p_std)).sum(-1)  # [B,K], one sample
        # The masks' KL(q(m | x) ‖ p(m | z)) of the paper's ELBO: the decoder's masks must explain the
        # IC-SBP's, pixel by pixel. It is what ties the decoder's masks (the scored segmentation) to
        # the instance colouring; without it they are free, and one component takes every pixel.
        kl_m = (att * (log_att - log_masks)).sum(dim=(1, 2, 3, 4))  # [B], nats per image
        err, kl, kl_masks = nll.mean(), kl_k.sum(1).mean(), kl_m.mean()
        loss = self.geco.loss(err, kl + kl_masks)
        masks = log_masks.exp()
        return ModelOutput(
            loss=loss,
            losses={
                "nll": err.detach(),
                "kl": kl.detach(),
                "kl_masks": kl_masks.detach(),
                "elbo": (err + kl + kl_masks).detach(),
                "geco_beta": self.geco.beta.detach().float(),
            },
            recon=(masks * means).sum(1).detach().clamp(0, 1),
            masks=masks[:, :, 0].detach(),
            slots=mu.detach(),
            slot_rgb=means.detach(),
            extras={"attention_masks": att[:, :, 0].detach(), "embeddings": zeta.detach()},
        )

    def after_step(self, step: int, out: ModelOutput) -> None:
        self.geco.update(out.losses["nll"], step)

    def picture(self, batch: dict[str, Tensor], out: ModelOutput, limit: int = 8) -> np.ndarray:
        """The family's grid (decoder masks) with the IC-SBP segmentation and the first three
        embedding channels next to each input (the paper's figures show both mask sets)."""
        grid = self.family.picture(self, batch, out, limit)
        att = out.extras.get("attention_masks")
        if att is None:
            return grid
        n = min(limit, att.shape[0])
        k = att.shape[1]
        zeta = out.extras["embeddings"][:n, :3].float()
        lo, hi = zeta.amin(dim=(2, 3), keepdim=True), zeta.amax(dim=(2, 3), keepdim=True)
        zeta = (zeta - lo) / (hi - lo + 1e-8)
        rows = [
            [batch["image"][i].cpu(), viz.colorize_ids(att[i].float().argmax(0).cpu() + 1, k + 1), zeta[i].cpu()]
            for i in range(n)
        ]
        extra = viz.image_grid(rows, labels=["input", "IC-SBP seg", "embedding"])
        width = max(grid.shape[1], extra.shape[1])
        pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=255)  # noqa: E731
        return np.concatenate([pad(grid), pad(extra)], axis=0)


PRESETS = {
    "benchmark": GenesisV2Config(),
    "paper": GenesisV2Config(component="pixel"),  # the paper's per-pixel mixture
    # The proving ground (64² sprites, 2 CPU cores): 16 features and latent dimensions; GECO starts
    # at β = 0.01 (at β = 1 the latents collapse first and GECO spends ~400 steps lowering β).
    "cpu": GenesisV2Config(feat_dim=16, component="pixel", geco_beta_init=0.01),
}
