"""SPACE: Unsupervised Object-Oriented Scene Representation via Spatial Attention and
Decomposition (Lin et al., ICLR 2020), written from the paper and the ClevrTex benchmark's
configuration of it (the original code is GPL and was not copied).

    foreground (G × G cells, all in parallel):
      image ─▶ conv encoder (+ lateral "residual" encoder) ─▶ per cell:
          z_pres ~ RelaxedBernoulli(τ, logits = 8.8·tanh(·)),  z_depth ~ N,
          z_scale ~ N ─▶ σ(·) (fraction of the image),  z_shift ~ N ─▶ cell centre + tanh(·) cells
      glimpse = STN(image, z_where) ─▶ glimpse encoder ─▶ z_what ~ N ─▶ sub-pixel glimpse decoder
          ─▶ RGB o, α;  α̂ = α·z_pres;  STN⁻¹ to the image;  importance = softmax_cells(100·α̂·σ(−z_depth))
      fg = Σ_k importance_k·(α̂·o)_k,   α_map = Σ_k importance_k·α̂_k
    background (K components, sequentially):
      image ─▶ encoder ─▶ LSTM over k with z_mask,k−1 ─▶ z_mask,k ~ N ─▶ mask decoder ─▶ stick-breaking masks
      [log mask_k, image] ─▶ component encoder ─▶ z_comp,k ~ N ─▶ broadcast decoder ─▶ component RGB
      bg = Σ_k mask_k·comp_k;  priors: p(z_mask,k | z_mask,<k) by a prior LSTM, p(z_comp,k | z_mask,k) by an MLP
    recon = α_map·fg + (1 − α_map)·bg
    loss  = −Σ log[α_map·N(x; fg, σ_fg) + (1 − α_map)·Σ_k mask_k·N(x; comp_k, σ_bg)] + KL_fg + KL_bg + boundary

The boundary loss penalises α_map under a frame of each present glimpse (a glimpse-sized kernel,
zero inside a ``boundary_width`` border), pushing objects into the middle of their boxes; it is
switched off after ``boundary_off_step``. Annealed (linear in the step, recomputed every call):
the presence prior 0.1 → 0.01 over steps 4k–10k, the scale prior mean −1 → −2 over 10k–20k, the
temperature (constant 2.5 in the reference configuration).

Optimisation (reference, ``optimizers``): two optimisers, RMSprop 1e-5 on the foreground and Adam
1e-3 on the background, constant rates, gradient clip 1.0 (``train.grad_clip``), batch 16.

What differs from the reference code, and why:

* ``masks`` are each cell's share of α_map (importance_k·α̂_k, summing to α_map ≤ 1); the reference
  hands the evaluator the pasted α̂_k, which can sum past 1 where glimpses overlap.
* Channel widths (``width``), the glimpse size and the image size are parameters (the reference
  fixes 32-px glimpses, 128-px images and its widths); the reference configuration is the default.
  Strides follow the reference's rule (stride-2 convolutions until the grid is reached).
* The boundary kernel's border value is the reference's 1000/32² for any glimpse size (the
  reference divides by the glimpse area of its fixed 32-px glimpse).
* Standard deviations softplus(·) get a floor of 1e-6 where the reference has none (float32
  softplus underflows to 0 for inputs below about −100, which ``Normal`` rejects).
* ``bg_decode_size`` (CPU economy, off by default) decodes background components on a smaller grid
  and resizes them bilinearly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from objdisc.models.base import Model, ModelOutput, data_input
from objdisc.models.blocks import glimpse as stn
from objdisc.models.blocks.conv_stacks import (
    ConvNormStack,
    SubPixelStack,
    fit_upscales,
    scaled,
)
from objdisc.models.blocks.priors import bernoulli_kl, gaussian_prior, normal, presence
from objdisc.train.optim import OptimizerSpec, ParamGroup
from objdisc.train.schedule import Anneal, WarmupDecay, at

MIN_STD = 1e-6  # the reference's softplus standard deviations have no floor; float32 needs one
# Reference schedules (Anneal is frozen: shared defaults are safe).
PRESENCE_PRIOR = Anneal.linear(0.1, 0.01, 4000, 10000)
SCALE_PRIOR_MEAN = Anneal.linear(-1.0, -2.0, 10000, 20000)
TEMPERATURE = Anneal.linear(2.5, 2.5, 0, 10000)  # tau_start = tau_end = 2.5


@dataclass
class SPACEConfig:
    """Defaults: the reference configuration as the ClevrTex benchmark trains it (128×128, 8×8
    cells, 5 background components): 5,307,651 parameters (foreground 2,357,167)."""

    image_size: int = data_input("image_size", 128)
    grid: int = 8  # G: G × G foreground cells
    glimpse_size: int = 32  # 8, 16 or 32
    width: float = 1.0  # multiplies the channel widths of every conv stack (CPU presets narrow it)
    fg_enc_dim: int = 128  # image-encoder features per cell
    z_what_dim: int = 32
    fg_sigma: float = 0.15
    bg_sigma: float = 0.15
    pres_logit_scale: float = 8.8
    presence_prior: float | Anneal = PRESENCE_PRIOR
    scale_prior_mean: float | Anneal = SCALE_PRIOR_MEAN
    scale_prior_std: float = 0.1
    temperature: float | Anneal = TEMPERATURE
    boundary_loss: bool = True
    boundary_off_step: int = 100_000_000  # the reference's bl_off_step: in effect never
    boundary_width: int = 6  # pixels of a 32-px glimpse (scaled with the glimpse)
    fix_alpha_steps: int = 0  # α_map fixed to fix_alpha_value for steps 0 < step < this
    fix_alpha_value: float = 0.1
    bg_components: int = 5  # K
    bg_enc_dim: int = 64
    z_mask_dim: int = 32
    z_comp_dim: int = 32
    rnn_hidden: int = 64
    comp_prior_hidden: int = 64
    comp_decoder_hidden: int = 32
    bg_decode_size: int = 0  # > 0: decode background components at this side, resized bilinearly
    fg_lr: float = 1e-5  # RMSprop, foreground
    bg_lr: float = 1e-3  # Adam, background

    def __post_init__(self) -> None:
        down = self.image_size // self.grid if self.grid > 0 else 0
        if self.grid < 1 or self.image_size % self.grid or down & (down - 1) or down > 32:
            raise ValueError(
                f"SPACEConfig: image_size / grid must be a power of 2 up to 32, got {self.image_size} / {self.grid}"
            )
        if self.glimpse_size not in (8, 16, 32):
            raise ValueError(f"SPACEConfig.glimpse_size must be 8, 16 or 32, got {self.glimpse_size}")
        if self.image_size & (self.image_size - 1) or not 16 <= self.image_size <= 128:
            raise ValueError(f"SPACEConfig.image_size must be a power of 2 in [16, 128], got {self.image_size}")
        if self.bg_components < 1 or self.width <= 0:
            raise ValueError("SPACEConfig.bg_components must be >= 1 and width > 0")

    @property
    def cells(self) -> int:
        return self.grid**2


def w(channels: int, cfg: SPACEConfig) -> int:
    return scaled(channels, cfg.width)


# ---------------------------------------------------------------------------------- foreground


class ImageEncoderFg(nn.Module):
    """Image → per-cell features (conv stack, a lateral conv pair added as a residual branch)
    → the parameters of z_pres, z_depth, z_scale, z_shift per cell."""

    def __init__(self, cfg: SPACEConfig) -> None:
        super().__init__()
        # Stride-2 convs until the grid is reached, in the reference's order: the three 4×4 convs,
        # then the last 3×3 conv, then the one before it (n = log2(image / grid)).
        n = int(math.log2(cfg.image_size // cfg.grid))
        s = [2 if rank < n else 1 for rank in (0, 1, 2, 4, 3)]
        c = cfg.fg_enc_dim
        self.enc = ConvNormStack(
            3,
            [
                (w(16, cfg), 4, s[0], 4), (w(32, cfg), 4, s[1], 8), (w(64, cfg), 4, s[2], 8),
                (w(128, cfg), 3, s[3], 16), (w(256, cfg), 3, s[4], 32), (c, 1, 1, 16),
            ],
        )  # fmt: skip
        self.lateral = ConvNormStack(c, [(c, 3, 1, 16), (c, 3, 1, 16)])
        self.merge = ConvNormStack(2 * c, [(w(128, cfg), 3, 1, 16)])
        d = w(128, cfg)
        self.z_scale_net = nn.Conv2d(d, 4, 1)
        self.z_shift_net = nn.Conv2d(d, 4, 1)
        self.z_pres_net = nn.Conv2d(d, 1, 1)
        self.z_depth_net = nn.Conv2d(d, 2, 1)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """[B, 3, H, W] → per cell [B, N, D] (cells in raster order)."""
        feats = self.enc(image)
        feats = self.merge(torch.cat([feats, self.lateral(feats)], dim=1))

        def cells(x: Tensor) -> Tensor:
            return x.flatten(2).transpose(1, 2)

        return {
            "pres": cells(self.z_pres_net(feats)),
            "depth": cells(self.z_depth_net(feats)),
            "scale": cells(self.z_scale_net(feats)),
            "shift": cells(self.z_shift_net(feats)),
        }


class GlimpseEncoder(nn.Module):
    """Glimpse [N, 3, g, g] → (mean, raw std) of z_what: convs down to 4×4, a valid 4×4 conv, a linear."""

    def __init__(self, cfg: SPACEConfig) -> None:
        super().__init__()
        downs = int(math.log2(cfg.glimpse_size // 4))  # 3 for 32-px glimpses
        strided = [i < downs for i in range(3)]
        down = [(4, 2) if s else (3, 1) for s in strided]
        self.cnn = ConvNormStack(
            3,
            [
                (w(16, cfg), 3, 1, 4), (w(32, cfg), *down[0], 8), (w(32, cfg), 3, 1, 4),
                (w(64, cfg), *down[1], 8), (w(128, cfg), *down[2], 8), (w(256, cfg), 4, 0, 16),
            ],
        )  # fmt: skip
        self.head = nn.Linear(w(256, cfg), 2 * cfg.z_what_dim)

    def forward(self, glimpses: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.cnn(glimpses).flatten(1)).chunk(2, dim=1)


class GlimpseDecoder(nn.Module):
    """z_what → RGB o and α glimpses (sigmoid), by sub-pixel convolutions from 1×1."""

    def __init__(self, cfg: SPACEConfig) -> None:
        super().__init__()
        ups = int(math.log2(cfg.glimpse_size))
        pairs = [(128, 16), (128, 16), (64, 8), (32, 8), (16, 4)][5 - ups :]
        stages = [(w(256, cfg), 1, 1, 16)]
        for c, g in pairs:
            stages += [(w(c, cfg), 1, 2, g), (w(c, cfg), 3, 1, g)]
        self.net = SubPixelStack(cfg.z_what_dim, stages)
        self.rgb = nn.Conv2d(self.net.out_channels, 3, 3, 1, 1)
        self.alpha = nn.Conv2d(self.net.out_channels, 1, 3, 1, 1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = self.net(z)
        return torch.sigmoid(self.rgb(x)), torch.sigmoid(self.alpha(x))


class Foreground(nn.Module):
    def __init__(self, cfg: SPACEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoderFg(cfg)
        self.what_encoder = GlimpseEncoder(cfg)
        self.glimpse_decoder = GlimpseDecoder(cfg)
        g, border = cfg.glimpse_size, max(1, round(cfg.boundary_width * cfg.glimpse_size / 32))
        kernel = torch.full((g, g), 1000.0 / 32**2)  # the reference's 1000 · 1/32²
        kernel[border : g - border, border : g - border] = 0.0
        self.register_buffer("boundary_kernel", kernel, persistent=False)

    def forward(self, image: Tensor, step: int) -> dict[str, Tensor]:
        cfg = self.cfg
        b, _, h, w_ = image.shape
        n = cfg.cells
        p = self.image_encoder(image)
        tau = at(cfg.temperature, step)

        pres_logits = cfg.pres_logit_scale * torch.tanh(p["pres"])  # [B, N, 1]
        z_pres = presence(tau, logits=pres_logits).rsample()
        q_depth = normal(*p["depth"].chunk(2, -1), min_std=MIN_STD)
        z_depth = q_depth.rsample()
        q_scale = normal(*p["scale"].chunk(2, -1), min_std=1e-15)
        q_shift = normal(*p["shift"].chunk(2, -1), min_std=MIN_STD)
        scale = torch.sigmoid(q_scale.rsample())
        shift = stn.cell_shift(0.5 + torch.tanh(q_shift.rsample()), (cfg.grid, cfg.grid))

        glimpses = stn.extract_cells(image, scale, shift, cfg.glimpse_size)  # [B, N, 3, g, g]
        what_mean, what_raw = self.what_encoder(glimpses.flatten(0, 1))
        q_what = normal(what_mean.unflatten(0, (b, n)), what_raw.unflatten(0, (b, n)), min_std=MIN_STD)
        z_what = q_what.rsample()
        o, alpha = self.glimpse_decoder(z_what.flatten(0, 1))
        o, alpha = o.unflatten(0, (b, n)), alpha.unflatten(0, (b, n))
        alpha_hat = alpha * z_pres[..., None, None]  # [B, N, 1, g, g]
        importance = alpha_hat * 100.0 * torch.sigmoid(-z_depth[..., None, None])

        # One inverse transform for everything pasted: α̂·o, α̂, importance, the boundary frame
        # (while that loss is on) and, for pictures only, the object colours o.
        boundary_on = cfg.boundary_loss and step <= cfg.boundary_off_step
        pasted = [alpha_hat * o, alpha_hat, importance]
        if boundary_on:
            pasted.append(self.boundary_kernel.expand(b, n, 1, -1, -1) * z_pres[..., None, None])
        if not self.training:
            pasted.append(o)
        placed = stn.place_cells(torch.cat(pasted, dim=2), scale, shift, (h, w_))
        y_each, alpha_each, importance_full = placed[:, :, :3], placed[:, :, 3:4], placed[:, :, 4:5]
        importance_norm = importance_full.softmax(dim=1)
        fg = (y_each * importance_norm).sum(1)
        shares = alpha_each * importance_norm  # [B, N, 1, H, W]
        alpha_map = shares.sum(1)
        o_full = placed[:, :, -3:] if not self.training else None

        kl_pres = bernoulli_kl(pres_logits, at(cfg.presence_prior, step), q_is_logits=True).flatten(1).sum(1)
        kl_depth = kl_divergence(q_depth, gaussian_prior(0.0, 1.0, q_depth.mean)).flatten(1).sum(1)
        scale_prior = gaussian_prior(at(cfg.scale_prior_mean, step), cfg.scale_prior_std, q_scale.mean)
        kl_where = kl_divergence(q_scale, scale_prior).flatten(1).sum(1)
        kl_where = kl_where + kl_divergence(q_shift, gaussian_prior(0.0, 1.0, q_shift.mean)).flatten(1).sum(1)
        kl_what = kl_divergence(q_what, gaussian_prior(0.0, 1.0, q_what.mean)).flatten(1).sum(1)

        boundary = image.new_zeros(b)
        if boundary_on:
            overlap = placed[:, :, 5:6].sum(1) * alpha_map
            boundary = -Normal(0.0, 0.7).log_prob(overlap).flatten(1).sum(1)

        return {
            "fg": fg, "alpha_map": alpha_map, "shares": shares.squeeze(2), "o_full": o_full,
            "z_pres": z_pres.squeeze(-1), "scale": scale, "shift": shift, "z_what": z_what,
            "kl_pres": kl_pres, "kl_depth": kl_depth, "kl_where": kl_where, "kl_what": kl_what, "boundary": boundary,
        }  # fmt: skip


# ---------------------------------------------------------------------------------- background


def conv_bn_elu(channels: list[int], in_channels: int) -> nn.Sequential:
    """Stride-2 3×3 convs, each followed by BatchNorm and ELU."""
    layers: list[nn.Module] = []
    for c in channels:
        layers += [nn.Conv2d(in_channels, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ELU()]
        in_channels = c
    return nn.Sequential(*layers)


class ComponentDecoder(nn.Module):
    """Spatial broadcast decoder of a background component: z tiled over an (s + 8)² grid with x, y
    coordinates, four valid 3×3 convs with BatchNorm and ELU, a 1×1 conv to RGB, sigmoid; resized
    bilinearly to the image when decoded smaller (``bg_decode_size``)."""

    def __init__(self, cfg: SPACEConfig) -> None:
        super().__init__()
        self.size = cfg.image_size
        self.decode = cfg.bg_decode_size or cfg.image_size
        hid = cfg.comp_decoder_hidden
        layers: list[nn.Module] = []
        c = cfg.z_comp_dim + 2
        for _ in range(4):
            layers += [nn.Conv2d(c, hid, 3), nn.BatchNorm2d(hid), nn.ELU()]
            c = hid
        layers.append(nn.Conv2d(hid, 3, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        s = self.decode + 8
        n = z.shape[0]
        lin = torch.linspace(-1.0, 1.0, s, device=z.device, dtype=z.dtype)
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        x = torch.cat([z[:, :, None, None].expand(-1, -1, s, s), torch.stack([xx, yy]).expand(n, -1, -1, -1)], dim=1)
        out = self.net(x)
        if self.decode != self.size:
            out = F.interpolate(out, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


class Background(nn.Module):
    def __init__(self, cfg: SPACEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        embed = (cfg.image_size // 16) ** 2
        c64 = w(64, cfg)
        self.image_encoder = nn.Sequential(
            conv_bn_elu([c64] * 4, 3), nn.Flatten(), nn.Linear(c64 * embed, cfg.bg_enc_dim), nn.ELU()
        )
        self.rnn_mask = nn.LSTMCell(cfg.z_mask_dim + cfg.bg_enc_dim, cfg.rnn_hidden)
        self.rnn_mask_h = nn.Parameter(torch.zeros(cfg.rnn_hidden))
        self.rnn_mask_c = nn.Parameter(torch.zeros(cfg.rnn_hidden))
        self.z_mask_0 = nn.Parameter(torch.zeros(cfg.z_mask_dim))
        self.predict_mask = nn.Linear(cfg.rnn_hidden, 2 * cfg.z_mask_dim)
        ups = fit_upscales((4, 2, 4, 4), cfg.image_size)  # the reference's 128 px; fewer for smaller images
        stages = [(w(256, cfg), 1, 1, 16), (w(256, cfg), 1, ups[0], 16), (w(256, cfg), 3, 1, 16),
                  (w(128, cfg), 1, ups[1], 16), (w(128, cfg), 3, 1, 16), (w(64, cfg), 1, ups[2], 8),
                  (w(64, cfg), 3, 1, 8), (w(16, cfg), 1, ups[3], 4), (w(16, cfg), 3, 1, 4),
                  (w(16, cfg), 3, 1, 4), (1, 3, 1, 1)]  # fmt: skip
        self.mask_decoder = SubPixelStack(cfg.z_mask_dim, stages, final_norm=False)
        c32 = w(32, cfg)
        self.comp_encoder = nn.Sequential(
            conv_bn_elu([c32, c32, c64, c64], 4), nn.Flatten(), nn.Linear(c64 * embed, 2 * cfg.z_comp_dim)
        )
        self.comp_decoder = ComponentDecoder(cfg)
        self.rnn_mask_prior = nn.LSTMCell(cfg.z_mask_dim, cfg.rnn_hidden)
        self.rnn_mask_h_prior = nn.Parameter(torch.zeros(cfg.rnn_hidden))
        self.rnn_mask_c_prior = nn.Parameter(torch.zeros(cfg.rnn_hidden))
        self.predict_mask_prior = nn.Linear(cfg.rnn_hidden, 2 * cfg.z_mask_dim)
        hid = cfg.comp_prior_hidden
        self.predict_comp_prior = nn.Sequential(
            nn.Linear(cfg.z_mask_dim, hid), nn.ELU(), nn.Linear(hid, hid), nn.ELU(), nn.Linear(hid, 2 * cfg.z_comp_dim)
        )

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        cfg = self.cfg
        b = image.shape[0]
        k = cfg.bg_components
        enc = self.image_encoder(image)
        z_mask = self.z_mask_0.expand(b, -1)
        state = (self.rnn_mask_h.expand(b, -1), self.rnn_mask_c.expand(b, -1))
        q_masks, z_masks, raw_masks = [], [], []
        for _ in range(k):
            state = self.rnn_mask(torch.cat([z_mask, enc], dim=1), state)
            q = normal(*self.predict_mask(state[0]).chunk(2, dim=1), min_std=1e-4)
            z_mask = q.rsample()
            q_masks.append(q)
            z_masks.append(z_mask)
            raw_masks.append(torch.sigmoid(self.mask_decoder(z_mask)))
        masks, remaining = [], torch.ones_like(raw_masks[0])  # stick-breaking: the masks sum to 1
        for i, m in enumerate(raw_masks):
            mask = m * remaining if i < k - 1 else remaining
            remaining = remaining - mask
            masks.append(mask)
        masks = torch.stack(masks, dim=1)  # [B, K, 1, H, W]

        comp_in = torch.cat([(masks + 1e-5).log(), image[:, None].expand(-1, k, -1, -1, -1)], dim=2)
        q_comp = normal(*self.comp_encoder(comp_in.flatten(0, 1)).chunk(2, dim=1), min_std=1e-4)
        comps = self.comp_decoder(q_comp.rsample()).unflatten(0, (b, k))  # [B, K, 3, H, W]
        log_like = Normal(comps, cfg.bg_sigma).log_prob(image[:, None]) + (masks + 1e-5).log()
        log_like = torch.logsumexp(log_like, dim=1)  # [B, 3, H, W]
        bg = (comps * masks).sum(1)

        q_comp_mean = q_comp.mean.unflatten(0, (b, k))
        q_comp_std = q_comp.stddev.unflatten(0, (b, k))
        state = (self.rnn_mask_h_prior.expand(b, -1), self.rnn_mask_c_prior.expand(b, -1))
        kl_mask = image.new_zeros(b)
        kl_comp = image.new_zeros(b)
        for i in range(k):
            p_mask = normal(*self.predict_mask_prior(state[0]).chunk(2, dim=1), min_std=1e-4)
            p_comp = normal(*self.predict_comp_prior(z_masks[i]).chunk(2, dim=1), min_std=1e-4)
            kl_mask = kl_mask + kl_divergence(q_masks[i], p_mask).sum(1)
            kl_comp = kl_comp + kl_divergence(Normal(q_comp_mean[:, i], q_comp_std[:, i]), p_comp).sum(1)
            state = self.rnn_mask_prior(z_masks[i], state)
        return {"bg": bg, "log_like": log_like, "kl_bg": kl_mask + kl_comp, "kl_mask": kl_mask, "kl_comp": kl_comp}


# ---------------------------------------------------------------------------------- model


class SPACE(Model):
    """SPACE on ``batch["image"]`` [B, 3, H, W] in [0, 1] (H = W = ``image_size``)."""

    def __init__(self, cfg: SPACEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SPACEConfig()
        self.foreground = Foreground(cfg)
        self.background = Background(cfg)

    def optimizers(self, train) -> list[OptimizerSpec]:
        constant = WarmupDecay()  # the reference's rates are constant
        fg = ParamGroup(list(self.foreground.parameters()), name="fg", lr=self.cfg.fg_lr, schedule=constant)
        bg = ParamGroup(list(self.background.parameters()), name="bg", lr=self.cfg.bg_lr, schedule=constant)
        return [OptimizerSpec([fg], name="rmsprop"), OptimizerSpec([bg], name="adam")]

    picture = stn.picture_with_background_slot  # the family's grid, background as slot 0

    def forward(self, batch: dict[str, Tensor], step: int = 0) -> ModelOutput:
        cfg = self.cfg
        image = batch["image"]
        h, w_ = image.shape[-2:]
        if (h, w_) != (cfg.image_size, cfg.image_size):
            raise ValueError(f"SPACE expects {cfg.image_size}×{cfg.image_size} images, got {h}×{w_}")
        bgo = self.background(image)
        fgo = self.foreground(image, step)
        alpha_map = fgo["alpha_map"]
        if 0 < step < cfg.fix_alpha_steps:
            alpha_map = torch.full_like(alpha_map, cfg.fix_alpha_value)
        fg_like = Normal(fgo["fg"], cfg.fg_sigma).log_prob(image) + (alpha_map + 1e-5).log()
        bg_like = bgo["log_like"] + (1.0 - alpha_map + 1e-5).log()
        nll = -torch.logsumexp(torch.stack([fg_like, bg_like]), dim=0).flatten(1).sum(1)
        recon = alpha_map * fgo["fg"] + (1.0 - alpha_map) * bgo["bg"]
        kl_fg = fgo["kl_pres"] + fgo["kl_depth"] + fgo["kl_where"] + fgo["kl_what"]
        loss = (nll + kl_fg + bgo["kl_bg"] + fgo["boundary"]).mean()

        z_pres = fgo["z_pres"]
        return ModelOutput(
            loss=loss,
            losses={
                "nll": nll.mean().detach(),
                "kl_what": fgo["kl_what"].mean().detach(),
                "kl_where": fgo["kl_where"].mean().detach(),
                "kl_pres": fgo["kl_pres"].mean().detach(),
                "kl_depth": fgo["kl_depth"].mean().detach(),
                "kl_bg_mask": bgo["kl_mask"].mean().detach(),
                "kl_bg_comp": bgo["kl_comp"].mean().detach(),
                "boundary": fgo["boundary"].mean().detach(),
                "presence_prior": torch.tensor(at(cfg.presence_prior, step)),
                "scale_prior_mean": torch.tensor(at(cfg.scale_prior_mean, step)),
                "count": z_pres.detach().round().sum(1).mean(),
            },
            recon=recon.detach().clamp(0.0, 1.0),
            masks=fgo["shares"].detach(),
            masks_have_background=False,
            slots=fgo["z_what"].detach(),
            slot_rgb=None if fgo["o_full"] is None else fgo["o_full"].detach(),  # evaluation only
            boxes=stn.boxes(fgo["scale"], fgo["shift"], (h, w_), clip=True).detach(),
            presence=z_pres.detach(),
            extras={"background": bgo["bg"].detach(), "foreground": fgo["fg"].detach(), "alpha": alpha_map.detach()},
        )


PRESETS = {
    "benchmark": SPACEConfig(),
    # The 2D proving ground (64×64 sprites, objects of 10–24 px): 4×4 cells of 16 px, 16-px
    # glimpses, a quarter of the channels, background components decoded at 16×16.
    "cpu": SPACEConfig(
        image_size=64,
        grid=4,
        glimpse_size=16,
        width=0.25,
        fg_enc_dim=32,
        z_what_dim=16,
        bg_enc_dim=32,
        z_mask_dim=16,
        z_comp_dim=16,
        rnn_hidden=32,
        comp_prior_hidden=32,
        comp_decoder_hidden=16,
        bg_components=3,
        bg_decode_size=16,
        presence_prior=Anneal.linear(0.1, 0.01, 400, 1000),
        scale_prior_mean=Anneal.linear(-1.0, -2.0, 1000, 2000),
        fg_lr=1e-4,
        bg_lr=1e-3,
    ),
}

__all__ = ["PRESETS", "SPACE", "SPACEConfig"]
